"""The version table: the block list of one object version or multipart part.

Blocks are keyed by (part number, offset) and only ever added; `deleted`
once true stays true. A deleted version keeps its block list so that a block
added after the deletion (an upload still running when its version was
superseded) is released too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from granary.model.block_ref import BlockRef
from granary.table.schema import TableSchema

if TYPE_CHECKING:
    from granary.db.base import Tx
    from granary.table.table import Table


class VersionBlock(msgspec.Struct, array_like=True, frozen=True):
    part_number: int
    offset: int
    hash: bytes
    size: int


class Version(msgspec.Struct, array_like=True, frozen=True):
    uuid: bytes
    deleted: bool = False
    blocks: list[VersionBlock] = []
    bucket_id: bytes = b""
    key: str = ""

    @classmethod
    def tombstone(cls, uuid: bytes) -> Version:
        return cls(uuid=uuid, deleted=True)

    def merge(self, other: Version) -> Version:
        by_position = {(b.part_number, b.offset): b for b in self.blocks}
        for block in other.blocks:
            position = (block.part_number, block.offset)
            mine = by_position.get(position)
            if mine is None or (block.hash, block.size) > (mine.hash, mine.size):
                by_position[position] = block
        return Version(
            uuid=self.uuid,
            deleted=self.deleted or other.deleted,
            blocks=[by_position[p] for p in sorted(by_position)],
            bucket_id=max(self.bucket_id, other.bucket_id),
            key=max(self.key, other.key),
        )

    def part_blocks(self, part_number: int) -> list[VersionBlock]:
        return [b for b in self.blocks if b.part_number == part_number]


class VersionTable(TableSchema[Version]):
    name = "version"
    entry_type = Version

    def __init__(self) -> None:
        self.block_refs: Table[BlockRef] | None = None

    def partition_key(self, entry: Version) -> bytes:
        return entry.uuid

    def sort_key(self, entry: Version) -> bytes:
        return b""

    def is_tombstone(self, entry: Version) -> bool:
        return entry.deleted

    def updated(self, tx: Tx, old: Version | None, new: Version) -> None:
        if not new.deleted:
            return
        released = {b.hash for b in new.blocks}
        if old is not None and old.deleted:
            released -= {b.hash for b in old.blocks}
        for block_id in released:
            self.block_refs.queue_insert(
                tx, BlockRef(block=block_id, version=new.uuid, deleted=True)
            )
