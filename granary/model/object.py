"""The object table: one row per (bucket, key) holding its versions.

A version goes Uploading -> Aborted or Uploading -> Complete -> Deleted (the
later state wins a merge). A version is a *null* version when it was written
while its bucket was unversioned or suspended, else a versioned one (S3's
version id is then its uuid). After a merge the row keeps:
- every version newer than the newest final one (Complete or Deleted): the
  uploads still running;
- every versioned Complete version, and of the null ones only the newest:
  an unversioned bucket's row converges to "the current value plus the
  uploads still running", as before versions existed;
- Deleted versions (deleted by id): they win every merge, so a stale replica
  cannot bring the version back; they go with the row's tombstone GC.
The current version is the newest Complete one. Multipart uploads are not in
the row (model/mpu_index.py lists them), except the Uploading versions rows
written by 0.3 still carry. A deletion is a Complete version whose data is a
delete marker.

Rows written before versions existed have no `null` field: decoded with its
default (a null version), they mean exactly what they meant.

An upload completes under a fresh timestamp (its Uploading entry, older, is
then dropped): of two concurrent writes, the one that finishes last wins, as
in S3. Uploads clean up after themselves when they fail; the merge hook only
releases the blocks of complete versions that were superseded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from msgspec.structs import replace

from granary.model.lock import NO_RETENTION, Retention
from granary.model.version import VersionRow, tombstone
from granary.table.schema import TableSchema
from granary.util.crdt import Lww

if TYPE_CHECKING:
    from granary.db.base import Tx
    from granary.table.counters import RowCounters
    from granary.table.table import Table

# States in merge order: a higher state wins. Complete and Deleted are final:
# the newest final version (and the newest final null one) of a row only moves
# forward, so dropping what they supersede gives the same row whatever order
# merges come in.
UPLOADING = 0
ABORTED = 1
COMPLETE = 2
DELETED = 3

INLINE = 0
BLOCKS = 1
DELETE_MARKER = 2


class ObjectMeta(msgspec.Struct, array_like=True, frozen=True):
    size: int
    etag: str
    headers: list[tuple[str, str]]
    checksum: tuple[str, str] | None = None
    parts: int = 0
    part_checksums: list[str] = []
    """For a multipart object with a checksum: each part's, in part order."""
    checksum_type: str = "FULL_OBJECT"
    """FULL_OBJECT, or COMPOSITE for a multipart checksum of the parts' checksums."""
    upload_id: bytes = b""
    """The multipart upload this version completed, if any."""


Tags = list[tuple[str, str]]
NO_TAGS: Lww[Tags] = Lww(0, [])
NO_LEGAL_HOLD: Lww[bool] = Lww(0, False)


class VersionSettings(msgspec.Struct, frozen=True):
    """What a write sets on the version it makes besides its data: its tags and its
    object lock (a retention None takes the bucket's default, if any)."""

    tags: Tags = []
    retention: Retention | None = None
    legal_hold: bool = False


class ObjectVersion(msgspec.Struct, array_like=True, frozen=True):
    uuid: bytes
    timestamp: int
    state: int
    multipart: bool = False
    kind: int = BLOCKS
    meta: ObjectMeta | None = None
    inline: bytes | None = None
    first_block: bytes | None = None
    tags: Lww[Tags] = NO_TAGS
    """The version's tag set: set when it is written (x-amz-tagging), then replaced
    in place by PutObjectTagging, the latest write winning (a register of its own)."""
    null: bool = True
    """Written while the bucket was unversioned or suspended: S3's `null` version."""
    retention: Retention = NO_RETENTION
    """Object lock retention (granary/model/lock.py: COMPLIANCE never shortens)."""
    legal_hold: Lww[bool] = NO_LEGAL_HOLD
    """Object lock legal hold: changed only in a round (`Objects.change_version`)."""

    @property
    def sort_key(self) -> tuple[int, bytes]:
        return (self.timestamp, self.uuid)

    @property
    def is_data(self) -> bool:
        return self.state == COMPLETE and self.kind != DELETE_MARKER

    @property
    def is_final(self) -> bool:
        return self.state >= COMPLETE

    @property
    def version_id(self) -> str:
        """S3's version id: `null`, or the uuid in hex."""
        return "null" if self.null else self.uuid.hex()

    def deleted(self) -> ObjectVersion:
        """This version deleted by id: its data dropped, its identity kept."""
        return ObjectVersion(self.uuid, self.timestamp, DELETED, kind=self.kind, null=self.null)

    @property
    def data_meta(self) -> ObjectMeta:
        """`meta` of a version holding data (`is_data`), which always has it."""
        if self.meta is None:
            raise ValueError(f"version {self.uuid.hex()} has no metadata: it holds no data")
        return self.meta

    def merge(self, other: ObjectVersion) -> ObjectVersion:
        """The later state wins; within one state the tags and the lock merge as their
        registers and the rest is chosen by its encoding (any fixed order converges)."""
        if self.state != other.state:
            return self if self.state > other.state else other
        if self == other:
            return self
        registers = {
            "tags": self.tags.merge(other.tags),
            "retention": self.retention.merge(other.retention),
            "legal_hold": self.legal_hold.merge(other.legal_hold),
        }
        mine, theirs = replace(self, **registers), replace(other, **registers)
        return mine if msgspec.msgpack.encode(mine) >= msgspec.msgpack.encode(theirs) else theirs


class Object(msgspec.Struct, array_like=True, frozen=True):
    bucket_id: bytes
    key: str
    versions: list[ObjectVersion]

    def merge(self, other: Object) -> Object:
        by_key = {v.sort_key: v for v in self.versions}
        for version in other.versions:
            mine = by_key.get(version.sort_key)
            by_key[version.sort_key] = version if mine is None else mine.merge(version)
        ordered = [by_key[k] for k in sorted(by_key)]
        return Object(self.bucket_id, self.key, _prune(ordered))

    def newest(self) -> ObjectVersion | None:
        """The newest complete version: data or a delete marker."""
        for version in reversed(self.versions):
            if version.state == COMPLETE:
                return version
        return None

    def current(self) -> ObjectVersion | None:
        """The newest complete version holding data, if the object exists."""
        newest = self.newest()
        return newest if newest is not None and newest.is_data else None

    def find(self, version_id: str) -> ObjectVersion | None:
        """The complete version S3 names `version_id` (a uuid in hex, or `null`)."""
        for version in reversed(self.versions):
            if version.state == COMPLETE and version.version_id == version_id:
                return version
        return None

    def listed(self) -> list[ObjectVersion]:
        """The versions ListObjectVersions shows, newest first: the complete ones, if
        any is more than a null delete marker (a deleted object of an unversioned
        bucket shows nothing)."""
        complete = [v for v in reversed(self.versions) if v.state == COMPLETE]
        return complete if any(not _null_marker(v) for v in complete) else []

    def is_tombstone(self) -> bool:
        """True when nothing will ever list the row: a null delete marker, aborted
        uploads and/or versions deleted by id.

        A failed PUT to a new key leaves a row holding only its Aborted
        version. Counted as a tombstone, it is forgotten by the tombstone GC
        (table/gc.py) once every holder of the partition has this exact row.
        That cannot bring anything back or lose a complete version:
        - Aborted outranks Uploading for the same (timestamp, uuid), so only an
          Uploading copy of an aborted upload could return, and only from a
          write older than the GC delay still in flight (the window every
          tombstone has). A plain PUT never writes an Uploading version to
          this table; a multipart upload's was written at its creation.
        - A complete version gets its own, fresh timestamp when it commits
          (and an upload whose commit started is never aborted), so it is
          another entry: arriving after the row was forgotten it recreates
          the row; arriving on one holder between the GC's two phases, it
          changes that holder's row, which is then kept and anti-entropy
          brings it back to the others.
        - Aborted versions hold no blocks (the abort released them through
          the version table), and a delete marker has none, so dropping the
          row releases nothing.
        Versions deleted by id (Deleted) count as nothing too: they released
        their blocks when they were deleted. A versioned delete marker does not:
        ListObjectVersions shows it.
        """
        return all(v.state in (ABORTED, DELETED) or _null_marker(v) for v in self.versions)


def _null_marker(version: ObjectVersion) -> bool:
    return version.state == COMPLETE and version.kind == DELETE_MARKER and version.null


def _prune(ordered: list[ObjectVersion]) -> list[ObjectVersion]:
    """What a merged row keeps of its versions (in (timestamp, uuid) order): see the
    module docstring. Both thresholds are versions the row keeps, so pruning twice
    gives the same row."""
    newest_final = max((i for i, v in enumerate(ordered) if v.is_final), default=-1)
    newest_null = max((i for i, v in enumerate(ordered) if v.is_final and v.null), default=-1)
    return [
        v
        for i, v in enumerate(ordered)
        if i >= newest_final or (v.is_final and (not v.null or i >= newest_null))
    ]


def _exists(entry: Object) -> bool:
    return entry.current() is not None


def _has_versions(entry: Object) -> bool:
    return bool(entry.listed())


def object_usage(entry: Object) -> tuple[int, int]:
    """What a row adds to its bucket's usage: (objects, bytes) of its current version."""
    current = entry.current()
    return (0, 0) if current is None else (1, current.data_meta.size)


class ObjectTable(TableSchema[Object]):
    name = "object"
    entry_type = Object
    filters = {"data": _exists, "versions": _has_versions}
    versions: Table[VersionRow]
    """The version table, set by ModelStore once it is built."""
    usage: RowCounters[Object] | None = None
    """This node's per-bucket counts of objects and bytes (model/usage.py), if kept."""

    def partition_key(self, entry: Object) -> bytes:
        return entry.bucket_id

    def sort_key(self, entry: Object) -> bytes:
        return entry.key.encode()

    def is_tombstone(self, entry: Object) -> bool:
        return entry.is_tombstone()

    def updated(self, tx: Tx, old: Object | None, new: Object, incoming: Object) -> None:
        """Complete versions that are not (or no longer) in the row, or deleted, release
        their blocks.

        That includes an incoming version merged away at once because a newer
        one had already completed (two writes committing out of order).
        """
        if self.usage is not None:
            self.usage.changed(tx, old, new)
        kept = {v.uuid for v in new.versions if v.state != DELETED}
        candidates = [*(old.versions if old is not None else ()), *incoming.versions]
        for version in candidates:
            if version.state == COMPLETE and version.kind == BLOCKS and version.uuid not in kept:
                self.versions.queue_insert(tx, tombstone(version.uuid))

    def forgotten(self, tx: Tx, entry: Object) -> None:
        if self.usage is not None:
            self.usage.changed(tx, entry, None)
