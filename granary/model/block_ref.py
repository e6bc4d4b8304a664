"""The block_ref table: which versions use which block.

It shares its partitioning with the blocks themselves, so the reference
count of a block is updated on the nodes that store it, in the same
transaction as the block_ref row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from granary.table.schema import TableSchema

if TYPE_CHECKING:
    from granary.block.refcount import RefCounts
    from granary.db.base import Tx


class BlockRef(msgspec.Struct, array_like=True, frozen=True):
    block: bytes
    version: bytes
    deleted: bool = False

    def merge(self, other: BlockRef) -> BlockRef:
        if other.deleted and not self.deleted:
            return other
        return self


class BlockRefTable(TableSchema[BlockRef]):
    name = "block_ref"
    entry_type = BlockRef

    def __init__(self, refcounts: RefCounts) -> None:
        self.refcounts = refcounts

    def partition_key(self, entry: BlockRef) -> bytes:
        return entry.block

    def sort_key(self, entry: BlockRef) -> bytes:
        return entry.version

    def is_tombstone(self, entry: BlockRef) -> bool:
        return entry.deleted

    def updated(self, tx: Tx, old: BlockRef | None, new: BlockRef, incoming: BlockRef) -> None:
        if old is None and not new.deleted:
            self.refcounts.increment(tx, new.block)
        elif old is not None and not old.deleted and new.deleted:
            self.refcounts.decrement(tx, new.block)
        elif old is None and new.deleted:
            # The deletion overtook the reference: the block may already be
            # on disk with nobody counting it.
            self.refcounts.schedule_check(tx, new.block)

    def forgotten(self, tx: Tx, entry: BlockRef) -> None:
        # The reference now lives on the block's new holders only. Counting it
        # here still would count it twice if the partition ever came back.
        # The block GC hands the copy to a holder that needs it before deleting.
        # (A collected tombstone comes here too: deleted, it counted for nothing.)
        if not entry.deleted:
            self.refcounts.decrement(tx, entry.block)
