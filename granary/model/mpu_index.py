"""The upload index: one row per multipart upload in progress, per bucket.

ListMultipartUploads and DeleteBucket read it; nothing else does. It lives
apart from the object table on purpose: an object row drops every version
older than its newest complete one (that keeps the row a small CRDT), so an
upload listed through it vanished as soon as the key was written again,
and many open uploads of one key made every read and write of that key pay
for them.

All uploads of a bucket share its id as partition key; the sort key is the
object key, escaped so that it sorts as the key does and ends with a
terminator below every byte a key can continue with (see `encode_key`),
then the upload id. Upload ids start with their creation time (see
`new_upload_id`), so the table lists in S3's order: by key, then by
initiation time.

A row is written when the upload is created and tombstoned when it is
completed or aborted; the tombstone GC then forgets it. The upload table
cascades its own deletion here (see `MpuTable.updated`), so a crash between
the two writes cannot leave an upload listed forever.
"""

from __future__ import annotations

import secrets
import struct
from typing import TYPE_CHECKING

import msgspec

from granary.table.schema import TableSchema

if TYPE_CHECKING:
    from granary.db.base import Tx
    from granary.table.counters import RowCounters

_TERMINATOR = b"\x00\x00"
_TIMESTAMP = struct.Struct(">Q")


def new_upload_id(timestamp: int) -> bytes:
    """16 bytes: the creation time (ms, big-endian) then 8 random bytes.

    Ordering ids orders uploads by creation time, which is what S3 lists.
    """
    return _TIMESTAMP.pack(timestamp) + secrets.token_bytes(8)


def encode_key(key: str) -> bytes:
    """A key's bytes with NUL escaped as NUL 0xFF (0xFF never occurs in UTF-8).

    Escaping keeps the keys' byte order, and a key's entries (the key, then
    NUL NUL, then an upload id) sort before those of any longer key it
    prefixes, NUL included: an object key may contain any character.
    """
    return key.encode().replace(b"\x00", b"\x00\xff")


def index_sort_key(key: str, upload_id: bytes) -> bytes:
    return encode_key(key) + _TERMINATOR + upload_id


def after_key(key: str) -> bytes:
    """The smallest sort key past every upload of `key` and before any longer key's."""
    return encode_key(key) + b"\x00\x01"


def after_upload(key: str, upload_id: bytes) -> bytes:
    """The smallest sort key past upload `upload_id` of `key`."""
    return index_sort_key(key, upload_id) + b"\x00"


class UploadIndexEntry(msgspec.Struct, array_like=True, frozen=True):
    bucket_id: bytes
    key: str
    upload_id: bytes
    timestamp: int
    """When the upload was created (ms): its Initiated date."""
    deleted: bool = False

    def merge(self, other: UploadIndexEntry) -> UploadIndexEntry:
        if self.deleted != other.deleted:
            return self if self.deleted else other
        return max(self, other, key=msgspec.msgpack.encode)


def index_tombstone(bucket_id: bytes, key: str, upload_id: bytes) -> UploadIndexEntry:
    """The row that ends an upload's listing (its timestamp does not matter: deleted wins)."""
    return UploadIndexEntry(bucket_id, key, upload_id, 0, deleted=True)


def _in_progress(entry: UploadIndexEntry) -> bool:
    return not entry.deleted


def upload_usage(entry: UploadIndexEntry) -> tuple[int]:
    """What a row adds to its bucket's usage: one unfinished upload, unless ended."""
    return (0,) if entry.deleted else (1,)


class UploadIndexTable(TableSchema[UploadIndexEntry]):
    name = "multipart_index"
    entry_type = UploadIndexEntry
    filters = {"in_progress": _in_progress}
    usage: RowCounters[UploadIndexEntry] | None = None
    """This node's per-bucket counts of unfinished uploads (model/usage.py), if kept."""

    def partition_key(self, entry: UploadIndexEntry) -> bytes:
        return entry.bucket_id

    def sort_key(self, entry: UploadIndexEntry) -> bytes:
        return index_sort_key(entry.key, entry.upload_id)

    def is_tombstone(self, entry: UploadIndexEntry) -> bool:
        return entry.deleted

    def updated(
        self,
        tx: Tx,
        old: UploadIndexEntry | None,
        new: UploadIndexEntry,
        incoming: UploadIndexEntry,
    ) -> None:
        if self.usage is not None:
            self.usage.changed(tx, old, new)

    def forgotten(self, tx: Tx, entry: UploadIndexEntry) -> None:
        if self.usage is not None:
            self.usage.changed(tx, entry, None)
