"""Peer discovery through Kubernetes custom resources (`[kubernetes_discovery]`, with
Garage's keys: namespace, service_name, skip_crd).

Each node publishes a `GranaryNode` resource (group `granary.io`) named by its node
id, labelled with the service name, holding its hostname, address and RPC port; it
writes it by server-side apply, so publishing again is idempotent. It lists the
resources with its service's label and dials every node they name. Unless
`skip_crd`, a node first creates the CustomResourceDefinition if it is missing
(a conflict means another node just did). At every poll of peering (a source,
see `discovery/__init__.py`) it publishes and lists again: nodes that start
later are found, and a node whose address changed (a rescheduled pod) is
reached at the new one.

The calls are plain HTTPS requests (aiohttp) with the pod's service account,
read from its files at each pass, since the kubelet rotates the token: the API
server is at KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT, its CA and the
token in SERVICE_ACCOUNT_DIR. The documents are built and read without I/O
(`crd`, `node_resource`, `peers_in`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
from pathlib import Path
from typing import Any

import aiohttp

from granary.net.addresses import NODE_ID_SIZE, format_addr, parse_addr
from granary.net.discovery import DiscoveryError, Found

log = logging.getLogger("granary.discovery")

GROUP = "granary.io"
VERSION = "v1"
KIND = "GranaryNode"
PLURAL = "granarynodes"
SERVICE_LABEL = "granary.io/service"
ZONE_LABEL = "topology.kubernetes.io/zone"
FIELD_MANAGER = "granary"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REQUEST_TIMEOUT_SECS = 10.0

Peers = list[tuple[bytes, str]]


class KubernetesError(DiscoveryError):
    """The API server refused a call, or could not be reached."""


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition of GranaryNode (namespaced, one version)."""
    port = {"type": "integer", "minimum": 1, "maximum": 65535}
    spec = {
        "type": "object",
        "required": ["address", "port"],
        "properties": {"hostname": {"type": "string"}, "address": {"type": "string"}, "port": port},
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "plural": PLURAL,
                "singular": KIND.lower(),
                "listKind": f"{KIND}List",
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": spec},
                        }
                    },
                }
            ],
        },
    }


def node_resource(
    node_id: bytes, namespace: str, service: str, hostname: str, public_addr: str
) -> dict[str, Any]:
    """This node's GranaryNode, as applied (server-side apply takes the whole object)."""
    address, port = parse_addr(public_addr)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": node_id.hex(),
            "namespace": namespace,
            "labels": {SERVICE_LABEL: service},
        },
        "spec": {"hostname": hostname, "address": address, "port": port},
    }


def peers_in(listing: dict[str, Any], own: bytes) -> Peers:
    """The (node id, address) of every node a GranaryNode list names, this one aside;
    malformed items are skipped."""
    found = []
    for item in listing.get("items") or []:
        try:
            node = bytes.fromhex(item["metadata"]["name"])
            spec = item["spec"]
            addr = format_addr(str(spec["address"]), int(spec["port"]))
            parse_addr(addr)
        except (KeyError, TypeError, ValueError):
            continue
        if len(node) == NODE_ID_SIZE and node != own:
            found.append((node, addr))
    return found


class KubernetesDiscovery:
    """Publishes this node and finds the others, at each poll."""

    def __init__(
        self,
        namespace: str,
        service_name: str,
        node_id: bytes,
        public_addr: str,
        *,
        skip_crd: bool = False,
        environ: dict[str, str] | None = None,
        account_dir: Path = SERVICE_ACCOUNT_DIR,
    ) -> None:
        environ = dict(os.environ) if environ is None else environ
        host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise KubernetesError("KUBERNETES_SERVICE_HOST/PORT are not set: not in a pod?")
        self.api = f"https://{format_addr(host, int(port))}"
        self.namespace = namespace
        self.service_name = service_name
        self.node_id = node_id
        self.public_addr = public_addr
        self.name = f"kubernetes {namespace}/{service_name}"
        self.account_dir = account_dir
        self._crd_known = skip_crd

    async def discover(self) -> Found:
        """One pass: the CRD (once), this node's resource, the others."""
        async with self._session() as session:
            if not self._crd_known:
                await self._ensure_crd(session)
            await self._publish(session)
            listing = await self._list(session)
        return [(node, addr) for node, addr in peers_in(listing, self.node_id)]

    async def zone_of(self, kubernetes_node: str) -> str | None:
        """The zone label (`topology.kubernetes.io/zone`) of the Kubernetes node this
        pod runs on (its name from the downward API's spec.nodeName); None if unset."""
        async with self._session() as session:
            status, body = await self._call(session, "GET", f"/api/v1/nodes/{kubernetes_node}")
        if status != 200 or not isinstance(body, dict):
            raise KubernetesError(f"cannot read node {kubernetes_node}: HTTP {status}")
        zone = (body.get("metadata", {}).get("labels") or {}).get(ZONE_LABEL)
        return str(zone) if zone else None

    def _session(self) -> aiohttp.ClientSession:
        """A session trusting the cluster's CA (read again: it may be rotated too)."""
        context = ssl.create_default_context(cafile=str(self.account_dir / "ca.crt"))
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECS)
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context), timeout=timeout)

    async def _ensure_crd(self, session: aiohttp.ClientSession) -> None:
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        status, _ = await self._call(session, "GET", f"{path}/{PLURAL}.{GROUP}")
        if status == 404:
            status, body = await self._call(session, "POST", path, crd())
            if status not in (201, 409):  # 409: another node created it meanwhile
                raise KubernetesError(f"cannot create the {KIND} definition: {status} {body}")
            log.info("created the %s custom resource definition", KIND)
        elif status != 200:
            raise KubernetesError(f"cannot read the {KIND} definition: HTTP {status}")
        self._crd_known = True

    def _resources(self) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}"

    async def _publish(self, session: aiohttp.ClientSession) -> None:
        resource = node_resource(
            self.node_id,
            self.namespace,
            self.service_name,
            socket.gethostname(),
            self.public_addr,
        )
        path = f"{self._resources()}/{self.node_id.hex()}?fieldManager={FIELD_MANAGER}&force=true"
        status, body = await self._call(
            session, "PATCH", path, resource, content_type="application/apply-patch+yaml"
        )
        if status not in (200, 201):
            raise KubernetesError(f"cannot publish this node: HTTP {status} {body}")

    async def _list(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        selector = f"{SERVICE_LABEL}={self.service_name}"
        status, body = await self._call(
            session, "GET", self._resources(), params={"labelSelector": selector}
        )
        if status != 200 or not isinstance(body, dict):
            raise KubernetesError(f"cannot list the nodes: HTTP {status}")
        return body

    async def _call(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        document: dict[str, Any] | None = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        try:
            token = (self.account_dir / "token").read_text().strip()
        except OSError as error:
            raise KubernetesError(f"no service account token: {error}") from None
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        data = None
        if document is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(document).encode()  # JSON is YAML, as apply patches take
        try:
            async with session.request(
                method, self.api + path, headers=headers, data=data, params=params
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise KubernetesError(f"{method} {path}: {error}") from None
        if status in (401, 403):
            raise KubernetesError(f"{method} {path}: HTTP {status}, check the service account")
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text
