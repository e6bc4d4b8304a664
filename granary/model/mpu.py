"""The multipart-upload table: the parts uploaded so far for one upload id.

The row also keeps the headers given at creation (content type, user
metadata, checksum algorithm): the object row's Uploading version is not a
safe home for them, as a newer version of the key may replace it.

Each uploaded part is its own version (its own block list). A part number
uploaded twice keeps both entries, ordered by timestamp; completion uses the
newest. Deleting the upload (complete or abort) releases every part version;
a completed object keeps its blocks through its own block_ref rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

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


class MultipartUpload(msgspec.Struct, array_like=True, frozen=True):
    upload_id: bytes
    timestamp: int
    bucket_id: bytes
    key: str
    deleted: bool = False
    parts: list[MpuPart] = []
    headers: list[tuple[str, str]] = []

    def merge(self, other: MultipartUpload) -> MultipartUpload:
        by_position = {(p.part_number, p.timestamp, p.version): p for p in self.parts}
        for part in other.parts:
            position = (part.part_number, part.timestamp, part.version)
            mine = by_position.get(position)
            if mine is None or msgspec.msgpack.encode(part) > msgspec.msgpack.encode(mine):
                by_position[position] = part
        return MultipartUpload(
            upload_id=self.upload_id,
            timestamp=max(self.timestamp, other.timestamp),
            bucket_id=max(self.bucket_id, other.bucket_id),
            key=max(self.key, other.key),
            deleted=self.deleted or other.deleted,
            parts=[by_position[p] for p in sorted(by_position)],
            headers=max(self.headers, other.headers),
        )

    def latest_parts(self) -> dict[int, MpuPart]:
        """The newest upload of each part number."""
        latest: dict[int, MpuPart] = {}
        for part in self.parts:
            latest[part.part_number] = part
        return latest


class MpuTable(TableSchema[MultipartUpload]):
    name = "multipart_upload"
    entry_type = MultipartUpload

    def __init__(self) -> None:
        self.versions: Table[VersionRow] | None = None

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
        if not new.deleted:
            return
        released = {p.version for p in new.parts}
        if old is not None and old.deleted:
            released -= {p.version for p in old.parts}
        for version in released:
            self.versions.queue_insert(tx, tombstone(version))
