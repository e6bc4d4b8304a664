"""A stand-in for the Kubernetes API server, for the tests of custom-resource discovery.

No Kubernetes API server can be installed on these machines (none is packaged by
Debian or the package registries reachable here), so the tests talk to this small
one, written from the Kubernetes API documentation ("API Concepts", "Server-Side
Apply", the CustomResourceDefinition and Status references). It serves what
discovery uses, as the real one answers it:
- HTTPS with a certificate of its own CA, and `Authorization: Bearer <token>`
  checked on every request (401 Status otherwise; the token can be rotated);
- CustomResourceDefinitions: create (201, 409 AlreadyExists), get (404 NotFound);
- the resources of a defined kind, namespaced: get, create (201, 409), list with
  an equality `labelSelector`, and server-side apply (PATCH with
  `application/apply-patch+yaml`: `fieldManager` required, creates or updates);
  a kind that is not defined is 404;
- `metadata.resourceVersion` on every object and list, raised by each write,
  `uid` and `creationTimestamp` set at creation;
- Nodes (core/v1), read only: get one by name, with its labels.
It keeps every request (method, path, query) for the tests to look at.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import itertools
import json
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.ports import free_port

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def write_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "api.crt", folder / "api.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]


@dataclass
class KubernetesApi:
    """The stand-in server: `start()` it, give nodes `port`, `ca_file` and `token`."""

    folder: Path
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    port: int = field(default_factory=free_port)
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ca_file, self._key_file = write_certificate(self.folder)
        self._versions = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None

    # ---- running it in a thread of its own

    def start(self) -> None:
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("the stand-in API server did not start")

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.ca_file, self._key_file)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context)
        self._loop.run_until_complete(site.start())
        ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def add_node(self, name: str, labels: dict[str, str]) -> None:
        """A Kubernetes node (a machine pods run on), with its labels."""
        self.nodes[name] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels, "resourceVersion": "1"},
        }

    def account_dir(self, folder: Path) -> Path:
        """A service-account folder (token, ca.crt, namespace) as a pod has one."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "token").write_text(self.token)
        (folder / "ca.crt").write_bytes(self.ca_file.read_bytes())
        return folder

    # ---- the API

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(Seen(request.method, request.path, dict(request.query)))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return status(401, "Unauthorized", "Unauthorized")
        parts = request.path.strip("/").split("/")
        body = await request.read()
        if request.path.startswith(CRD_PATH):
            return self._definitions(request.method, parts[4:], body)
        if parts[:3] == ["api", "v1", "nodes"] and len(parts) == 4 and request.method == "GET":
            found = self.nodes.get(parts[3])
            if found is None:
                return status(404, "NotFound", f'nodes "{parts[3]}" not found')
            return web.json_response(found)
        # /apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}]
        if len(parts) in (6, 7) and parts[0] == "apis" and parts[3] == "namespaces":
            group, version, namespace, plural = parts[1], parts[2], parts[4], parts[5]
            name = parts[6] if len(parts) == 7 else None
            definition = self.definitions.get(f"{plural}.{group}")
            if definition is None or version not in _served(definition):
                return status(404, "NotFound", "the server could not find the requested resource")
            return self._resources(request, definition, namespace, plural, name, body)
        return status(404, "NotFound", "the server could not find the requested resource")

    def _definitions(self, method: str, rest: list[str], body: bytes) -> web.Response:
        if method == "GET" and len(rest) == 1:
            found = self.definitions.get(rest[0])
            if found is None:
                return status(404, "NotFound", f'customresourcedefinitions "{rest[0]}" not found')
            return web.json_response(found)
        if method == "POST" and not rest:
            document = json.loads(body)
            spec = document.get("spec", {})
            name = document.get("metadata", {}).get("name")
            if (
                document.get("kind") != "CustomResourceDefinition"
                or name != f"{spec.get('names', {}).get('plural')}.{spec.get('group')}"
            ):
                return status(422, "Invalid", "metadata.name must be <plural>.<group>")
            if name in self.definitions:
                return status(409, "AlreadyExists", f'customresourcedefinitions "{name}" exists')
            self.definitions[name] = self._stamped(document, created=True)
            return web.json_response(self.definitions[name], status=201)
        return status(405, "MethodNotAllowed", "method not allowed")

    def _resources(
        self,
        request: web.Request,
        definition: dict[str, Any],
        namespace: str,
        plural: str,
        name: str | None,
        body: bytes,
    ) -> web.Response:
        kind = definition["spec"]["names"]["kind"]
        method = request.method
        if name is None and method == "GET":
            wanted = _selector(request.query.get("labelSelector", ""))
            items = [
                obj
                for (ns, pl, _), obj in sorted(self.objects.items())
                if ns == namespace and pl == plural and _matches(obj, wanted)
            ]
            listing = {
                "apiVersion": f"{definition['spec']['group']}/{request.path.split('/')[3]}",
                "kind": f"{kind}List",
                "metadata": {"resourceVersion": str(self._version_now())},
                "items": items,
            }
            return web.json_response(listing)
        if name is None and method == "POST":
            document = json.loads(body)
            key = (namespace, plural, document.get("metadata", {}).get("name", ""))
            if key in self.objects:
                return status(409, "AlreadyExists", f'{plural} "{key[2]}" already exists')
            self.objects[key] = self._stamped(document, created=True, namespace=namespace)
            return web.json_response(self.objects[key], status=201)
        key = (namespace, plural, name or "")
        if method == "GET":
            if key not in self.objects:
                return status(404, "NotFound", f'{plural} "{name}" not found')
            return web.json_response(self.objects[key])
        if method == "PATCH":
            if request.content_type != "application/apply-patch+yaml":
                return status(415, "UnsupportedMediaType", "only server-side apply is served")
            if not request.query.get("fieldManager"):
                return status(422, "Invalid", "fieldManager is required for apply patch")
            document = json.loads(body)  # JSON is YAML
            if document.get("kind") != kind or document["metadata"].get("name") != name:
                return status(422, "Invalid", "the applied object must name this resource")
            existing = self.objects.get(key)
            created = existing is None
            merged = document if created else _apply(existing, document)
            self.objects[key] = self._stamped(merged, created=created, namespace=namespace)
            return web.json_response(self.objects[key], status=201 if created else 200)
        return status(405, "MethodNotAllowed", "method not allowed")

    def _stamped(
        self, document: dict[str, Any], *, created: bool, namespace: str | None = None
    ) -> dict[str, Any]:
        metadata = dict(document.get("metadata", {}))
        metadata["resourceVersion"] = str(next(self._versions))
        if namespace is not None:
            metadata["namespace"] = namespace
        if created:
            metadata["uid"] = str(uuid.uuid4())
            metadata["creationTimestamp"] = datetime.datetime.now(datetime.UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
        return {**document, "metadata": metadata}

    def _version_now(self) -> int:
        return next(self._versions)

    def stored(self, namespace: str, plural: str) -> dict[str, dict[str, Any]]:
        """The objects of a kind in a namespace, by name."""
        return {
            name: obj
            for (ns, pl, name), obj in self.objects.items()
            if (ns, pl) == (namespace, plural)
        }


def _served(definition: dict[str, Any]) -> set[str]:
    return {v["name"] for v in definition["spec"]["versions"] if v.get("served")}


def _selector(text: str) -> dict[str, str]:
    """An equality-based label selector (`a=b,c==d`)."""
    wanted = {}
    for term in filter(None, text.split(",")):
        label, _, value = term.replace("==", "=").partition("=")
        wanted[label.strip()] = value.strip()
    return wanted


def _matches(obj: dict[str, Any], wanted: dict[str, str]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(label) == value for label, value in wanted.items())


def _apply(existing: dict[str, Any], applied: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply by one field manager that owns every field it applied: the
    applied fields replace the stored ones; metadata the server set is kept."""
    metadata = {**existing["metadata"], **applied["metadata"]}
    return {**existing, **applied, "metadata": metadata}
