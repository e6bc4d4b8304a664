"""The object table: one row per (bucket, key) holding its recent versions.

A version goes Uploading -> Aborted or Uploading -> Complete (the later state
wins a merge). After a merge every version older than the newest Complete one
is dropped, so a row converges to "the current value plus the uploads still
running". Multipart uploads are not in the row (model/mpu_index.py lists
them), except the Uploading versions rows written by 0.3 still carry. A
deletion is a Complete version whose data is a delete marker.

An upload completes under a fresh timestamp (its Uploading entry, older, is
then dropped): of two concurrent writes, the one that finishes last wins, as
in S3. Uploads clean up after themselves when they fail; the merge hook only
releases the blocks of complete versions that were superseded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from msgspec.structs import replace

from granary.model.version import VersionRow, tombstone
from granary.table.schema import TableSchema
from granary.util.crdt import Lww

if TYPE_CHECKING:
    from granary.db.base import Tx
    from granary.table.counters import RowCounters
    from granary.table.table import Table

# States in merge order: a higher state wins. Complete is final, so the set of
# complete versions only grows and dropping the versions older than the newest
# complete one gives the same row whatever order merges come in.
UPLOADING = 0
ABORTED = 1
COMPLETE = 2

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

    @property
    def sort_key(self) -> tuple[int, bytes]:
        return (self.timestamp, self.uuid)

    @property
    def is_data(self) -> bool:
        return self.state == COMPLETE and self.kind != DELETE_MARKER

    @property
    def data_meta(self) -> ObjectMeta:
        """`meta` of a version holding data (`is_data`), which always has it."""
        if self.meta is None:
            raise ValueError(f"version {self.uuid.hex()} has no metadata: it holds no data")
        return self.meta

    def merge(self, other: ObjectVersion) -> ObjectVersion:
        """The later state wins; within one state the tags merge as their register and
        the rest is chosen by its encoding (any fixed order converges)."""
        if self.state != other.state:
            return self if self.state > other.state else other
        if self == other:
            return self
        tags = self.tags.merge(other.tags)
        mine, theirs = replace(self, tags=tags), replace(other, tags=tags)
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
        last_complete = max((i for i, v in enumerate(ordered) if v.state == COMPLETE), default=None)
        if last_complete is not None:
            ordered = ordered[last_complete:]
        return Object(self.bucket_id, self.key, ordered)

    def current(self) -> ObjectVersion | None:
        """The newest complete version holding data, if the object exists."""
        for version in reversed(self.versions):
            if version.state == COMPLETE:
                return version if version.is_data else None
        return None

    def is_tombstone(self) -> bool:
        """True when nothing will ever list the row: a delete marker and/or aborted uploads.

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
        """
        return all(
            v.state == ABORTED or (v.state == COMPLETE and v.kind == DELETE_MARKER)
            for v in self.versions
        )


def _exists(entry: Object) -> bool:
    return entry.current() is not None


def object_usage(entry: Object) -> tuple[int, int]:
    """What a row adds to its bucket's usage: (objects, bytes) of its current version."""
    current = entry.current()
    return (0, 0) if current is None else (1, current.data_meta.size)


class ObjectTable(TableSchema[Object]):
    name = "object"
    entry_type = Object
    filters = {"data": _exists}
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
        """Complete versions that are not (or no longer) in the row release their blocks.

        That includes an incoming version merged away at once because a newer
        one had already completed (two writes committing out of order).
        """
        if self.usage is not None:
            self.usage.changed(tx, old, new)
        kept = {v.uuid for v in new.versions}
        candidates = [*(old.versions if old is not None else ()), *incoming.versions]
        for version in candidates:
            if version.state == COMPLETE and version.kind == BLOCKS and version.uuid not in kept:
                self.versions.queue_insert(tx, tombstone(version.uuid))

    def forgotten(self, tx: Tx, entry: Object) -> None:
        if self.usage is not None:
            self.usage.changed(tx, entry, None)
