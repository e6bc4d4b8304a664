"""The admin HTTP API: JSON, bearer-token authenticated; `/health` is open.

Routes (all under /v1 need `Authorization: Bearer <admin_token>`):
  GET    /health
  GET    /metrics                      Prometheus text; see metrics.py for its token
  GET    /v1/keys                      POST /v1/keys {name, key_id?, secret?, allow_create_bucket?}
  GET    /v1/keys/{id}                 POST /v1/keys/{id} {name?, allow_create_bucket?}
  DELETE /v1/keys/{id}
  GET    /v1/buckets                   POST /v1/buckets {name}
  GET    /v1/buckets/{name}            DELETE /v1/buckets/{name}
  POST   /v1/buckets/{name}/allow      POST /v1/buckets/{name}/deny   {key_id, read, write, owner}
  GET    /v1/stats                     see usage_ops.py; `GET /v1/buckets/{name}` has `usage`
  workers, blocks and repairs: see block_ops.py
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec

from granary.api.admin import metrics
from granary.api.admin.cluster_ops import ClusterAdmin
from granary.api.http.types import Request, Response
from granary.api.s3.errors import S3Error
from granary.api.s3.names import validate_bucket_name
from granary.api.s3.numbers import parse_decimal
from granary.layout.roles import LayoutError, ZoneRedundancy
from granary.model.access import Access, AccessError
from granary.model.buckets import ACCESS_KEY_ID, SECRET_ACCESS_KEY, AccessKey, Bucket, Permission
from granary.net.errors import RpcError

if TYPE_CHECKING:
    from granary.api.admin.block_ops import BlockOps
    from granary.api.admin.usage_ops import UsageOps

MAX_BODY = 64 * 1024


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class KeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str = ""
    key_id: str | None = None
    secret: str | None = None
    allow_create_bucket: bool = False


class KeyUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: str | None = None
    allow_create_bucket: bool | None = None


class BucketCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str


class PeerConnect(msgspec.Struct, forbid_unknown_fields=True):
    peer: str


class LayoutAssign(msgspec.Struct, forbid_unknown_fields=True):
    nodes: list[str]
    zone: str
    capacity: str | None = None
    tags: list[str] = []
    gateway: bool = False


class LayoutRemove(msgspec.Struct, forbid_unknown_fields=True):
    nodes: list[str]


class LayoutConfig(msgspec.Struct, forbid_unknown_fields=True):
    zone_redundancy: int | str


class LayoutApply(msgspec.Struct, forbid_unknown_fields=True):
    version: int


class LayoutSkipDeadNodes(msgspec.Struct, forbid_unknown_fields=True):
    version: int
    allow_missing_data: bool = False


class PermissionChange(msgspec.Struct, forbid_unknown_fields=True):
    key_id: str
    read: bool = False
    write: bool = False
    owner: bool = False


def permission_json(permission: Permission) -> dict[str, bool]:
    return {"read": permission.read, "write": permission.write, "owner": permission.owner}


def key_json(key: AccessKey, access: Access, *, secret: bool) -> dict:
    params = key.params
    if params is None:
        raise AdminError(404, f"access key {key.key_id} was deleted")
    names = access.bucket_names()
    return {
        "key_id": key.key_id,
        "name": params.name.value,
        "secret": access.reveal_secret(key) if secret else None,
        "allow_create_bucket": params.allow_create_bucket.value,
        "buckets": [
            {"name": names.get(bucket_id, bucket_id.hex()), **permission_json(perm)}
            for bucket_id, perm in params.authorized_buckets.items()
            if perm is not None and perm.any and bucket_id in names
        ],
    }


def bucket_json(name: str, bucket: Bucket) -> dict:
    params = bucket.params
    if params is None:
        raise AdminError(404, f"bucket {name} was deleted")
    return {
        "name": name,
        "id": bucket.id.hex(),
        "created": params.created,
        "keys": [
            {"key_id": key_id, **permission_json(perm)}
            for key_id, perm in params.authorized_keys.items()
            if perm is not None and perm.any
        ],
    }


class AdminApp:
    def __init__(
        self,
        access: Access,
        token: str,
        cluster: ClusterAdmin,
        ops: BlockOps | None = None,
        metrics_endpoint: metrics.MetricsEndpoint | None = None,
        usage: UsageOps | None = None,
    ) -> None:
        self.access = access
        self.usage = usage
        self.token = token
        self.cluster = cluster
        self.metrics_endpoint = metrics_endpoint
        self.routes: list[tuple[str, re.Pattern, Callable[..., Awaitable[object]]]] = [
            ("GET", re.compile(r"^/v1/status$"), self.status),
            ("GET", re.compile(r"^/v1/node/id$"), self.node_id),
            ("GET", re.compile(r"^/v1/tables$"), self.tables),
            ("POST", re.compile(r"^/v1/node/connect$"), self.connect),
            ("GET", re.compile(r"^/v1/layout$"), self.layout_show),
            ("GET", re.compile(r"^/v1/layout/history$"), self.layout_history),
            ("POST", re.compile(r"^/v1/layout/assign$"), self.layout_assign),
            ("POST", re.compile(r"^/v1/layout/remove$"), self.layout_remove),
            ("POST", re.compile(r"^/v1/layout/config$"), self.layout_config),
            ("POST", re.compile(r"^/v1/layout/apply$"), self.layout_apply),
            ("POST", re.compile(r"^/v1/layout/revert$"), self.layout_revert),
            ("POST", re.compile(r"^/v1/layout/skip-dead-nodes$"), self.layout_skip_dead_nodes),
            ("GET", re.compile(r"^/v1/keys$"), self.list_keys),
            ("POST", re.compile(r"^/v1/keys$"), self.create_key),
            ("GET", re.compile(r"^/v1/keys/([^/]+)$"), self.key_info),
            ("POST", re.compile(r"^/v1/keys/([^/]+)$"), self.update_key),
            ("DELETE", re.compile(r"^/v1/keys/([^/]+)$"), self.delete_key),
            ("GET", re.compile(r"^/v1/buckets$"), self.list_buckets),
            ("POST", re.compile(r"^/v1/buckets$"), self.create_bucket),
            ("GET", re.compile(r"^/v1/buckets/([^/]+)$"), self.bucket_info),
            ("DELETE", re.compile(r"^/v1/buckets/([^/]+)$"), self.delete_bucket),
            ("POST", re.compile(r"^/v1/buckets/([^/]+)/allow$"), self.allow),
            ("POST", re.compile(r"^/v1/buckets/([^/]+)/deny$"), self.deny),
        ]
        if ops is not None:
            self.routes.extend(ops.routes(self._body))
        if usage is not None:
            self.routes.extend(usage.routes())

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        response = await self._answer(request)
        endpoint = self._endpoint_of(request)
        if endpoint is not None:  # an unknown path is not counted, as in Garage
            metrics.API.record(endpoint, response.status, time.perf_counter() - started)
        return response

    def _endpoint_of(self, request: Request) -> str | None:
        """The name of the route a request takes (`list_keys` is `ListKeys`)."""
        if request.method == "GET" and request.path in ("/health", "/metrics"):
            return request.path[1:].capitalize()
        for method, pattern, handler in self.routes:
            if method == request.method and pattern.match(request.path):
                name = getattr(handler, "__name__", "?")
                return "".join(part.capitalize() for part in name.split("_"))
        return None

    async def _answer(self, request: Request) -> Response:
        try:
            if request.path == "/health" and request.method == "GET":
                health = self.cluster.health()
                return _json(200 if health.serving else 503, {"status": health.status})
            if request.path == "/metrics" and request.method == "GET":
                return self._metrics(request)
            self._authenticate(request)
            for method, pattern, handler in self.routes:
                match = pattern.match(request.path)
                if match and method == request.method:
                    result = await handler(request, *match.groups())
                    return _json(200, result) if result is not None else Response(204)
            raise AdminError(404, "no such admin endpoint")
        except AdminError as error:
            return _json(error.status, {"error": str(error)})
        except AccessError as error:
            status = 404 if error.reason.startswith("no-such") else 409
            return _json(status, {"error": str(error)})
        except S3Error as error:
            return _json(400, {"error": error.message})
        except (LayoutError, ValueError) as error:
            return _json(400, {"error": str(error)})
        except RpcError as error:
            return _json(502, {"error": str(error)})

    def _metrics(self, request: Request) -> Response:
        served = self.metrics_endpoint
        if served is None:
            raise AdminError(404, "metrics are not exported by this process")
        if not served.allows(request):
            raise AdminError(403, "missing or wrong metrics token")
        return served.render()

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.token.encode()
        ):
            raise AdminError(401, "missing or wrong admin token")

    async def _body(self, request: Request, kind: type):
        data = b""
        while chunk := await request.body.read(MAX_BODY):
            data += chunk
            if len(data) > MAX_BODY:
                raise AdminError(413, "body too large")
        try:
            return msgspec.json.decode(data or b"{}", type=kind)
        except msgspec.DecodeError as exc:
            raise AdminError(400, f"invalid request body: {exc}") from None

    def _key(self, key_id: str) -> AccessKey:
        key = self.access.get_key(key_id)
        if key is None:
            raise AdminError(404, f"no access key {key_id}")
        return key

    def _bucket(self, name: str) -> Bucket:
        bucket = self.access.resolve_bucket(name)
        if bucket is None:
            raise AdminError(404, f"no bucket {name}")
        return bucket

    async def status(self, request: Request) -> dict:
        return await self.cluster.status()

    async def tables(self, request: Request) -> dict:
        return self.cluster.table_digests()

    async def node_id(self, request: Request) -> dict:
        return {"node": self.cluster.node_id_string()}

    async def connect(self, request: Request) -> dict:
        body: PeerConnect = await self._body(request, PeerConnect)
        return {"connected": await self.cluster.connect(body.peer)}

    async def layout_show(self, request: Request) -> dict:
        return self.cluster.show()

    async def layout_history(self, request: Request) -> list:
        return self.cluster.history()

    async def layout_assign(self, request: Request) -> dict:
        body: LayoutAssign = await self._body(request, LayoutAssign)
        return await self.cluster.assign(
            body.nodes, body.zone, body.capacity, body.tags, body.gateway
        )

    async def layout_remove(self, request: Request) -> dict:
        body: LayoutRemove = await self._body(request, LayoutRemove)
        return await self.cluster.remove(body.nodes)

    async def layout_config(self, request: Request) -> dict:
        body: LayoutConfig = await self._body(request, LayoutConfig)
        return await self.cluster.configure(_zone_redundancy(body.zone_redundancy))

    async def layout_apply(self, request: Request) -> dict:
        body: LayoutApply = await self._body(request, LayoutApply)
        return await self.cluster.apply(body.version)

    async def layout_revert(self, request: Request) -> dict:
        return await self.cluster.revert()

    async def layout_skip_dead_nodes(self, request: Request) -> dict:
        body: LayoutSkipDeadNodes = await self._body(request, LayoutSkipDeadNodes)
        return await self.cluster.skip_dead_nodes(body.version, body.allow_missing_data)

    async def list_keys(self, request: Request) -> list:
        return [
            {"key_id": k.key_id, "name": k.params.name.value}
            for k in self.access.list_keys()
            if k.params is not None
        ]

    async def create_key(self, request: Request) -> dict:
        body: KeyCreate = await self._body(request, KeyCreate)
        if body.key_id is not None and not ACCESS_KEY_ID.match(body.key_id):
            raise AdminError(400, "key_id must be GK followed by 24 hex digits")
        if body.secret is not None and not SECRET_ACCESS_KEY.match(body.secret):
            raise AdminError(400, "secret must be 64 hex digits")
        key = await self.access.create_key(
            body.name,
            key_id=body.key_id,
            secret=body.secret,
            allow_create_bucket=body.allow_create_bucket,
        )
        return key_json(key, self.access, secret=True)

    async def key_info(self, request: Request, key_id: str) -> dict:
        show = "show_secret=true" in request.query_string
        return key_json(self._key(key_id), self.access, secret=show)

    async def update_key(self, request: Request, key_id: str) -> dict:
        self._key(key_id)
        body: KeyUpdate = await self._body(request, KeyUpdate)
        key = await self.access.update_key(
            key_id, name=body.name, allow_create_bucket=body.allow_create_bucket
        )
        return key_json(key, self.access, secret=False)

    async def delete_key(self, request: Request, key_id: str) -> None:
        self._key(key_id)
        await self.access.delete_key(key_id)

    async def list_buckets(self, request: Request) -> list:
        return [bucket_json(name, bucket) for name, bucket in self.access.list_buckets()]

    async def create_bucket(self, request: Request) -> dict:
        body: BucketCreate = await self._body(request, BucketCreate)
        validate_bucket_name(body.name)
        bucket = await self.access.create_bucket(body.name, None)
        return bucket_json(body.name, bucket)

    async def bucket_info(self, request: Request, name: str) -> dict:
        bucket = self._bucket(name)
        info = bucket_json(name, bucket)
        if self.usage is not None:
            info["usage"] = await self.usage.bucket_usage(bucket.id)
        return info

    async def delete_bucket(self, request: Request, name: str) -> None:
        await self.access.delete_bucket(name)

    async def _change(self, request: Request, name: str, grant: bool) -> dict:
        bucket = self._bucket(name)
        body: PermissionChange = await self._body(request, PermissionChange)
        current = bucket.permission(body.key_id)
        if grant:
            wanted = Permission(
                current.read or body.read, current.write or body.write, current.owner or body.owner
            )
        else:
            wanted = Permission(
                current.read and not body.read,
                current.write and not body.write,
                current.owner and not body.owner,
            )
        await self.access.set_permission(bucket.id, body.key_id, wanted)
        updated = self.access.get_bucket(bucket.id)
        if updated is None:
            raise AdminError(404, f"no bucket {name}")
        return bucket_json(name, updated)

    async def allow(self, request: Request, name: str) -> dict:
        return await self._change(request, name, grant=True)

    async def deny(self, request: Request, name: str) -> dict:
        return await self._change(request, name, grant=False)


def _zone_redundancy(value: int | str) -> ZoneRedundancy:
    if isinstance(value, int):
        return value
    if value == "max":
        return "max"
    number = parse_decimal(value, max_digits=3)
    if number is None:
        raise AdminError(400, "zone redundancy must be a number or 'max'")
    return number


def _json(status: int, value: object) -> Response:
    return Response(status, [("content-type", "application/json")], msgspec.json.encode(value))
