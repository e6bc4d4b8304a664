"""Buckets, bucket names (aliases) and access keys: full-copy tables.

Permissions are recorded on both sides (bucket -> keys and key -> buckets)
so that authorising a request and listing a key's buckets are both one
lookup. Each side is a last-writer-wins map, written together.
"""

from __future__ import annotations

import msgspec

from granary.table.schema import TableSchema
from granary.util.crdt import Deletable, Lww, LwwMap


class Permission(msgspec.Struct, array_like=True, frozen=True):
    read: bool = False
    write: bool = False
    owner: bool = False

    def allows(self, needed: str) -> bool:
        return bool(getattr(self, needed))

    @property
    def any(self) -> bool:
        return self.read or self.write or self.owner


NO_PERMISSION = Permission()


class BucketParams(msgspec.Struct, array_like=True, frozen=True):
    created: int
    authorized_keys: LwwMap[str, Permission]

    def merge(self, other: BucketParams) -> BucketParams:
        return BucketParams(
            created=min(self.created, other.created),
            authorized_keys=self.authorized_keys.merge(other.authorized_keys),
        )


class Bucket(msgspec.Struct, array_like=True, frozen=True):
    id: bytes
    state: Deletable[BucketParams]

    def merge(self, other: Bucket) -> Bucket:
        return Bucket(self.id, self.state.merge(other.state))

    @property
    def params(self) -> BucketParams | None:
        return None if self.state.deleted else self.state.value

    def permission(self, key_id: str | None) -> Permission:
        """What the key `key_id` may do here (an anonymous request, None: nothing)."""
        params = self.params
        if params is None or key_id is None:
            return NO_PERMISSION
        return params.authorized_keys.get(key_id) or NO_PERMISSION


class BucketAlias(msgspec.Struct, array_like=True, frozen=True):
    """A global bucket name; `target` is None once the name is released."""

    name: str
    target: Lww[bytes | None]

    def merge(self, other: BucketAlias) -> BucketAlias:
        return BucketAlias(self.name, self.target.merge(other.target))


class KeyParams(msgspec.Struct, array_like=True, frozen=True):
    secret: str
    name: Lww[str]
    allow_create_bucket: Lww[bool]
    authorized_buckets: LwwMap[bytes, Permission]

    def merge(self, other: KeyParams) -> KeyParams:
        return KeyParams(
            secret=max(self.secret, other.secret),
            name=self.name.merge(other.name),
            allow_create_bucket=self.allow_create_bucket.merge(other.allow_create_bucket),
            authorized_buckets=self.authorized_buckets.merge(other.authorized_buckets),
        )


class AccessKey(msgspec.Struct, array_like=True, frozen=True):
    key_id: str
    state: Deletable[KeyParams]

    def merge(self, other: AccessKey) -> AccessKey:
        return AccessKey(self.key_id, self.state.merge(other.state))

    @property
    def params(self) -> KeyParams | None:
        return None if self.state.deleted else self.state.value


class BucketTable(TableSchema[Bucket]):
    name = "bucket"
    entry_type = Bucket

    def partition_key(self, entry: Bucket) -> bytes:
        return b""

    def sort_key(self, entry: Bucket) -> bytes:
        return entry.id

    def is_tombstone(self, entry: Bucket) -> bool:
        return entry.state.deleted


class BucketAliasTable(TableSchema[BucketAlias]):
    name = "bucket_alias"
    entry_type = BucketAlias

    def partition_key(self, entry: BucketAlias) -> bytes:
        return b""

    def sort_key(self, entry: BucketAlias) -> bytes:
        return entry.name.encode()

    def is_tombstone(self, entry: BucketAlias) -> bool:
        return entry.target.value is None


class KeyTable(TableSchema[AccessKey]):
    name = "key"
    entry_type = AccessKey

    def partition_key(self, entry: AccessKey) -> bytes:
        return b""

    def sort_key(self, entry: AccessKey) -> bytes:
        return entry.key_id.encode()

    def is_tombstone(self, entry: AccessKey) -> bool:
        return entry.state.deleted
