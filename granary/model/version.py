"""The version table: the blocks of one object version or multipart part.

All rows of a version share its uuid as partition key: a header row (sort
key empty) says whether the version was deleted, and one row per block
(sort key: part number, offset) says which block stands there. Adding a
block writes one small row, whatever the object's size. A deleted version
releases its blocks, including blocks added after the deletion (an upload
still running when its version was superseded).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import msgspec

from granary.model.block_ref import BlockRef
from granary.table.schema import TableSchema

if TYPE_CHECKING:
    from granary.db.base import Tx
    from granary.table.table import Table

_POSITION = struct.Struct(">IQ")


class VersionHeader(msgspec.Struct, tag="h", array_like=True, frozen=True):
    uuid: bytes
    deleted: bool = False

    def merge(self, other: VersionHeader) -> VersionHeader:
        return self if self.deleted or not other.deleted else other


class VersionBlock(msgspec.Struct, tag="b", array_like=True, frozen=True):
    uuid: bytes
    part_number: int
    offset: int
    hash: bytes
    size: int

    def merge(self, other: VersionBlock) -> VersionBlock:
        return self if (self.hash, self.size) >= (other.hash, other.size) else other


VersionRow = VersionHeader | VersionBlock


def tombstone(uuid: bytes) -> VersionHeader:
    """The row that deletes a version and releases its blocks."""
    return VersionHeader(uuid, deleted=True)


def is_block(row: VersionRow) -> bool:
    return isinstance(row, VersionBlock)


class VersionTable(TableSchema[VersionRow]):
    name = "version"
    entry_type = VersionRow
    filters = {"blocks": is_block}
    # A deleted version's header must outlive its block rows: a block row
    # arriving late looks at it to release its block.
    collect_tombstones = False
    table: Table[VersionRow]
    """This table itself, and the block_ref table: set by ModelStore once they are built."""
    block_refs: Table[BlockRef]

    def partition_key(self, entry: VersionRow) -> bytes:
        return entry.uuid

    def sort_key(self, entry: VersionRow) -> bytes:
        if isinstance(entry, VersionHeader):
            return b""
        return _POSITION.pack(entry.part_number, entry.offset)

    def is_tombstone(self, entry: VersionRow) -> bool:
        return isinstance(entry, VersionHeader) and entry.deleted

    def updated(
        self, tx: Tx, old: VersionRow | None, new: VersionRow, incoming: VersionRow
    ) -> None:
        if isinstance(new, VersionHeader):
            if new.deleted and not (isinstance(old, VersionHeader) and old.deleted):
                for row in self.table.tx_rows(tx, new.uuid):
                    if isinstance(row, VersionBlock):
                        self._release(tx, row)
        elif old is None:
            header = self.table.tx_get(tx, new.uuid, b"")
            if isinstance(header, VersionHeader) and header.deleted:
                self._release(tx, new)

    def _release(self, tx: Tx, block: VersionBlock) -> None:
        self.block_refs.queue_insert(
            tx, BlockRef(block=block.hash, version=block.uuid, deleted=True)
        )
