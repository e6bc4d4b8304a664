"""Buckets, bucket names (aliases) and access keys: full-copy tables.

Permissions are recorded on both sides (bucket -> keys and key -> buckets)
so that authorising a request and listing a key's buckets are both one
lookup. Each side is a last-writer-wins map, written together.

A bucket row announces a DeleteBucket under way (`closing`) and an alias row
the CreateBucket calls under way for its name (`claims`), one slot per node,
so that racing writers see each other (granary/model/access.py says how).
These fields were appended to array-like rows: rows written before them
decode with the fields empty.
"""

from __future__ import annotations

import re

import msgspec

from granary.model.lifecycle import Lifecycle
from granary.model.lock import LockConfig
from granary.table.schema import TableSchema
from granary.util.crdt import Deletable, Lww, LwwMap, LwwMapEntry

ACCESS_KEY_ID = re.compile(r"^GK[0-9a-f]{24}$")
SECRET_ACCESS_KEY = re.compile(r"^[0-9a-f]{64}$")
"""The formats of an access key's id and secret that can be imported."""


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


class Intent(msgspec.Struct, array_like=True, frozen=True):
    """An operation a node has under way on a row, shown to the writers it races.

    It binds only while `active` and until `deadline` (ms, on the announcing
    node's clock): a node that crashed mid-operation cannot block the row for
    longer than that. The node that wrote it stops acting on it well before.
    """

    deadline: int
    active: bool = True

    def binds(self, now_ms: int) -> bool:
        return self.active and now_ms < self.deadline


def binding_intents(
    intents: LwwMap[bytes, Intent], now_ms: int, *, besides: bytes = b""
) -> list[bytes]:
    """The nodes (other than `besides`) that have an intent under way in `intents`."""
    return [node for node, intent in intents.items() if node != besides and intent.binds(now_ms)]


def own_slot(
    intents: LwwMap[bytes, Intent], node: bytes, intent: Intent, now_ms: int
) -> LwwMap[bytes, Intent]:
    """Only `node`'s slot of `intents`, set to `intent` (stamped after its value there)."""
    previous = intents.entry(node)
    ts = now_ms if previous is None else max(now_ms, previous.ts + 1)
    return LwwMap((LwwMapEntry(node, ts, intent),))


Tags = list[tuple[str, str]]

VERSIONING_ENABLED = "Enabled"
VERSIONING_SUSPENDED = "Suspended"


class BucketParams(msgspec.Struct, array_like=True, frozen=True):
    """A bucket's settings. Each S3 bucket setting (tags here; versioning, object
    lock, lifecycle, CORS, website later) is one last-writer-wins register,
    appended at the end (rows written before it decode with the default)."""

    created: int
    authorized_keys: LwwMap[str, Permission]
    closing: LwwMap[bytes, Intent] = LwwMap()
    """node id -> the DeleteBucket that node has under way, if any."""
    tags: Lww[Tags | None] = Lww(0, None)
    """The bucket's tag set (PutBucketTagging), None when it has none."""
    versioning: Lww[str] = Lww(0, "")
    """VERSIONING_ENABLED or VERSIONING_SUSPENDED; empty while it was never set."""
    object_lock: Lww[LockConfig | None] = Lww(0, None)
    """The object lock configuration, None while object lock is not enabled."""
    lifecycle: Lww[Lifecycle | None] = Lww(0, None)
    """The lifecycle rules (granary/model/lifecycle.py), None when there are none."""

    def merge(self, other: BucketParams) -> BucketParams:
        return BucketParams(
            created=min(self.created, other.created),
            authorized_keys=self.authorized_keys.merge(other.authorized_keys),
            closing=self.closing.merge(other.closing),
            tags=self.tags.merge(other.tags),
            versioning=self.versioning.merge(other.versioning),
            object_lock=self.object_lock.merge(other.object_lock),
            lifecycle=self.lifecycle.merge(other.lifecycle),
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
    claims: LwwMap[bytes, Intent] = LwwMap()
    """node id -> the CreateBucket of this name that node has under way, if any."""

    def merge(self, other: BucketAlias) -> BucketAlias:
        return BucketAlias(
            self.name, self.target.merge(other.target), self.claims.merge(other.claims)
        )


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
