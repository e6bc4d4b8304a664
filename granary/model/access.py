"""Operations on buckets, bucket names and access keys.

Full-copy tables are read from the local replica: every node holds all of
their rows, so authorising a request costs no network round trip.
"""

from __future__ import annotations

import secrets
from contextlib import aclosing

from msgspec.structs import replace

from granary.model.buckets import (
    NO_PERMISSION,
    AccessKey,
    Bucket,
    BucketAlias,
    BucketParams,
    KeyParams,
    Permission,
)
from granary.model.store import Model
from granary.table.table import Table
from granary.util.crdt import Deletable, Lww, LwwMap
from granary.util.time import now_ms


class AccessError(Exception):
    """A bucket or key operation that cannot be done; `reason` says why."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def new_key_id() -> str:
    return "GK" + secrets.token_hex(12)


def new_secret() -> str:
    return secrets.token_hex(32)


class Access:
    def __init__(self, model: Model) -> None:
        self.model = model

    async def _write(self, table: Table, entry: object) -> None:
        """Write to a full-copy table, and make sure this node's copy has it too.

        The write returns at a majority, which may not include this node; the
        operations here read their own writes back locally.
        """
        await table.insert(entry)
        await table.local_merge([entry])

    # ---- keys -----------------------------------------------------------

    def get_key(self, key_id: str) -> AccessKey | None:
        entry = self.model.keys.local_get(b"", key_id.encode())
        return entry if entry is not None and entry.params is not None else None

    async def refresh_key(self, key_id: str) -> AccessKey | None:
        """Ask a quorum for a key this node does not know yet (just created elsewhere)."""
        entry = await self.model.keys.get(b"", key_id.encode())
        if entry is not None:
            await self.model.keys.local_merge([entry])
        return self.get_key(key_id)

    def secret_of(self, key_id: str) -> str | None:
        key = self.get_key(key_id)
        return None if key is None else key.params.secret

    def list_keys(self) -> list[AccessKey]:
        return [k for k in self.model.keys.local_range(b"") if k.params is not None]

    async def create_key(
        self,
        name: str,
        *,
        key_id: str | None = None,
        secret: str | None = None,
        allow_create_bucket: bool = False,
    ) -> AccessKey:
        key_id = key_id or new_key_id()
        existing = self.model.keys.local_get(b"", key_id.encode())
        if existing is not None:
            reason = "deleted" if existing.params is None else "exists"
            raise AccessError(reason, f"access key {key_id} already exists or was deleted")
        now = now_ms()
        params = KeyParams(
            secret=secret or new_secret(),
            name=Lww(now, name),
            allow_create_bucket=Lww(now, allow_create_bucket),
            authorized_buckets=LwwMap(),
        )
        key = AccessKey(key_id, Deletable(deleted=False, value=params))
        await self._write(self.model.keys, key)
        return key

    async def update_key(
        self, key_id: str, *, name: str | None = None, allow_create_bucket: bool | None = None
    ) -> AccessKey:
        key = self._require_key(key_id)
        params = key.params
        now = now_ms()
        if name is not None:
            params = replace(params, name=params.name.update(name, now))
        if allow_create_bucket is not None:
            params = replace(
                params,
                allow_create_bucket=params.allow_create_bucket.update(allow_create_bucket, now),
            )
        updated = AccessKey(key_id, Deletable(deleted=False, value=params))
        await self._write(self.model.keys, updated)
        return updated

    async def delete_key(self, key_id: str) -> None:
        key = self._require_key(key_id)
        for bucket_id, permission in key.params.authorized_buckets.items():
            if permission is not None and permission.any:
                await self.set_permission(bucket_id, key_id, NO_PERMISSION)
        await self._write(self.model.keys, AccessKey(key_id, Deletable(deleted=True, value=None)))

    def _require_key(self, key_id: str) -> AccessKey:
        key = self.get_key(key_id)
        if key is None:
            raise AccessError("no-such-key", f"no access key {key_id}")
        return key

    # ---- buckets --------------------------------------------------------

    def get_bucket(self, bucket_id: bytes) -> Bucket | None:
        entry = self.model.buckets.local_get(b"", bucket_id)
        return entry if entry is not None and entry.params is not None else None

    def resolve_bucket(self, name: str) -> Bucket | None:
        alias = self.model.aliases.local_get(b"", name.encode())
        if alias is None or alias.target.value is None:
            return None
        return self.get_bucket(alias.target.value)

    async def refresh_bucket(self, name: str) -> Bucket | None:
        """Ask a quorum for a bucket name this node does not know yet."""
        alias = await self.model.aliases.get(b"", name.encode())
        if alias is None or alias.target.value is None:
            return None
        await self.model.aliases.local_merge([alias])
        bucket = await self.model.buckets.get(b"", alias.target.value)
        if bucket is not None:
            await self.model.buckets.local_merge([bucket])
        return self.get_bucket(alias.target.value)

    def bucket_names(self) -> dict[bytes, str]:
        """Bucket id -> its global name, for every named bucket."""
        return {
            a.target.value: a.name
            for a in self.model.aliases.local_range(b"")
            if a.target.value is not None
        }

    def list_buckets(self) -> list[tuple[str, Bucket]]:
        names = self.bucket_names()
        found = []
        for bucket in self.model.buckets.local_range(b""):
            if bucket.params is not None and bucket.id in names:
                found.append((names[bucket.id], bucket))
        return sorted(found, key=lambda item: item[0])

    async def create_bucket(self, name: str, owner_key_id: str | None) -> Bucket:
        existing = self.resolve_bucket(name)
        if existing is not None:
            if owner_key_id is not None and existing.permission(owner_key_id).owner:
                raise AccessError("owned", f"bucket {name} already exists and is yours")
            raise AccessError("exists", f"bucket {name} already exists")
        now = now_ms()
        bucket = Bucket(
            id=secrets.token_bytes(16),
            state=Deletable(deleted=False, value=BucketParams(now, LwwMap())),
        )
        await self._write(self.model.buckets, bucket)
        previous = self.model.aliases.local_get(b"", name.encode())
        target = Lww(now, bucket.id) if previous is None else previous.target.update(bucket.id, now)
        await self._write(self.model.aliases, BucketAlias(name, target))
        if owner_key_id is not None:
            await self.set_permission(bucket.id, owner_key_id, Permission(True, True, True))
        return self.get_bucket(bucket.id)

    async def bucket_is_empty(self, bucket_id: bytes) -> bool:
        async with aclosing(self.model.objects.range_entries(bucket_id, filter="data")) as found:
            async for _ in found:
                return False
        return True

    async def delete_bucket(self, name: str) -> None:
        bucket = self.resolve_bucket(name)
        if bucket is None:
            raise AccessError("no-such-bucket", f"no bucket {name}")
        if not await self.bucket_is_empty(bucket.id):
            raise AccessError("not-empty", f"bucket {name} is not empty")
        for key_id, permission in bucket.params.authorized_keys.items():
            if permission is not None and permission.any:
                await self.set_permission(bucket.id, key_id, NO_PERMISSION)
        alias = self.model.aliases.local_get(b"", name.encode())
        await self._write(
            self.model.aliases, BucketAlias(name, alias.target.update(None, now_ms()))
        )
        await self._write(
            self.model.buckets, Bucket(bucket.id, Deletable(deleted=True, value=None))
        )

    async def set_permission(self, bucket_id: bytes, key_id: str, permission: Permission) -> None:
        """Record a key's rights on a bucket, on both rows."""
        bucket = self.get_bucket(bucket_id)
        key = self.get_key(key_id)
        if bucket is None:
            raise AccessError("no-such-bucket", "no such bucket")
        if key is None:
            raise AccessError("no-such-key", f"no access key {key_id}")
        now = now_ms()
        params = bucket.params
        await self._write(
            self.model.buckets,
            Bucket(
                bucket.id,
                Deletable(
                    deleted=False,
                    value=replace(
                        params,
                        authorized_keys=params.authorized_keys.set(key_id, permission, now),
                    ),
                ),
            ),
        )
        key_params = key.params
        await self._write(
            self.model.keys,
            AccessKey(
                key_id,
                Deletable(
                    deleted=False,
                    value=replace(
                        key_params,
                        authorized_buckets=key_params.authorized_buckets.set(
                            bucket_id, permission, now
                        ),
                    ),
                ),
            ),
        )
