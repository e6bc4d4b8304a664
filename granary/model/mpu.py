"""The multipart-upload table: the parts uploaded so far for one upload id.

The row also keeps the headers given at creation (content type, user
metadata, checksum algorithm).

Each uploaded part is its own version (its own block list). The row keeps
one upload per part number: the one recorded last, as S3 does ("the
previously uploaded part is overwritten"), even if it started first (a
resent part whose first upload finishes last). `MpuPart.timestamp` is
therefore the time the part was recorded, not the time it started. The
upload that loses a merge is released (its version tombstoned), so a part
uploaded a thousand times costs one entry and keeps one copy of its data.

Deleting the upload (complete or abort) releases every part version; a
completed object keeps its blocks through its own block_ref rows. The
deletion also ends the upload's listing in the upload index (a queued
insert, so it survives a crash between the two writes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from msgspec.structs import replace

from granary.model.mpu_index import UploadIndexEntry, index_tombstone
from granary.model.version import VersionRow, tombstone
from granary.table.schema import TableSchema

if TYPE_CHECKING:
    from granary.db.base import Tx
    from granary.table.table import Table


class MpuPart(msgspec.Struct, array_like=True, frozen=True):
    part_number: int
    timestamp: int
    version: bytes
    etag: str
    size: int
    checksum: str | None = None

    @property
    def precedence(self) -> tuple[int, bytes, bytes]:
        """Of two uploads of a part number the greater wins: recorded last, then a fixed order."""
        return (self.timestamp, self.version, msgspec.msgpack.encode(self))


def _winner(a: MpuPart, b: MpuPart) -> MpuPart:
    return a if a.precedence >= b.precedence else b


class MultipartUpload(msgspec.Struct, array_like=True, frozen=True):
    upload_id: bytes
    timestamp: int
    bucket_id: bytes
    key: str
    deleted: bool = False
    parts: list[MpuPart] = []
    headers: list[tuple[str, str]] = []
    listed_in_object_row: bool = True
    """Whether the object row carries an Uploading version for this upload.

    Rows written before the upload index (which lack the field) do: aborting
    such an upload marks that version Aborted so the row lets it go. Uploads
    created since are only listed in the index and leave the object row alone.
    """

    def merge(self, other: MultipartUpload) -> MultipartUpload:
        latest = self.latest_parts()
        for part in other.parts:
            mine = latest.get(part.part_number)
            latest[part.part_number] = part if mine is None else _winner(mine, part)
        return MultipartUpload(
            upload_id=self.upload_id,
            timestamp=max(self.timestamp, other.timestamp),
            bucket_id=max(self.bucket_id, other.bucket_id),
            key=max(self.key, other.key),
            deleted=self.deleted or other.deleted,
            parts=[latest[number] for number in sorted(latest)],
            headers=max(self.headers, other.headers),
            listed_in_object_row=self.listed_in_object_row and other.listed_in_object_row,
        )

    def latest_parts(self) -> dict[int, MpuPart]:
        """The winning upload of each part number.

        A row written before parts were replaced in the merge may still hold
        several uploads of one number; the next merge drops the losers.
        """
        latest: dict[int, MpuPart] = {}
        for part in self.parts:
            mine = latest.get(part.part_number)
            latest[part.part_number] = part if mine is None else _winner(mine, part)
        return latest

    def index_entry(self) -> UploadIndexEntry:
        return UploadIndexEntry(self.bucket_id, self.key, self.upload_id, self.timestamp)


class MpuTable(TableSchema[MultipartUpload]):
    name = "multipart_upload"
    entry_type = MultipartUpload

    versions: Table[VersionRow]
    """The version table, set by ModelStore once it is built."""
    index: Table[UploadIndexEntry]
    """The upload index, set by ModelStore once it is built."""

    def partition_key(self, entry: MultipartUpload) -> bytes:
        return entry.upload_id

    def sort_key(self, entry: MultipartUpload) -> bytes:
        return b""

    def is_tombstone(self, entry: MultipartUpload) -> bool:
        return entry.deleted

    def updated(
        self,
        tx: Tx,
        old: MultipartUpload | None,
        new: MultipartUpload,
        incoming: MultipartUpload,
    ) -> None:
        """Release the part uploads this merge replaced, or all of them on deletion.

        The candidates include `incoming`'s parts: an upload that lost the
        merge at once (recorded after a newer one) is released too.
        """
        was_deleted = old is not None and old.deleted
        before = {p.version for p in old.parts} if old is not None else set()
        seen = before | {p.version for p in incoming.parts}
        if was_deleted:
            released = seen - before
        elif new.deleted:
            released = seen
        else:
            released = seen - {p.version for p in new.parts}
        for version in released:
            self.versions.queue_insert(tx, tombstone(version))
        if new.deleted and not was_deleted:
            self.index.queue_insert(tx, index_tombstone(new.bucket_id, new.key, new.upload_id))


async def end_upload(
    uploads: Table[MultipartUpload], index: Table[UploadIndexEntry], upload: MultipartUpload
) -> None:
    """Delete an upload's row (releasing its parts), then unlist it.

    The row's deletion also queues the index tombstone (see
    `MpuTable.updated`), which survives a crash; writing it here as well
    means the upload is no longer listed once the caller answers.
    """
    await uploads.insert(replace(upload, deleted=True, parts=[], headers=[]))
    await index.insert(index_tombstone(upload.bucket_id, upload.key, upload.upload_id))
