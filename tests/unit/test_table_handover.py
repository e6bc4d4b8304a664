"""Handing a partition over: rows pushed to the new holders are forgotten here, and
so is what this node derived from them (a block's reference count)."""

from __future__ import annotations

import asyncio

import pytest

from granary.block.refcount import RefCounts
from granary.db import open_db
from granary.model.block_ref import BlockRef, BlockRefTable
from granary.table.merkle import DigestPage
from granary.table.sync import TableSync
from granary.table.table import Table

ME, A, B, C = b"m" * 32, b"a" * 32, b"b" * 32, b"c" * 32
KEPT, GONE = b"\x01" * 32, b"\x02" * 32


class LeftReplication:
    """Every partition is held by A, B and C now; this node holds none."""

    full_copy = False

    def write_sets(self, partition: int) -> list[list[bytes]]:
        return [[A, B, C]]

    def storage_nodes(self, partition: int) -> list[bytes]:
        return [A, B, C]

    def write_quorum(self, nodes: int) -> int:
        return 2


class NewHolders:
    """Holders that have none of the rows and take every row pushed to them."""

    def __init__(self) -> None:
        self.received: dict[bytes, int] = {}

    async def bucket_digests(self, node: bytes, table: str, partition: int) -> dict[int, bytes]:
        return {}

    async def row_digests(self, node, table, partition, buckets, start, limit) -> DigestPage:
        return DigestPage([], None)

    async def merge(self, node: bytes, table: str, rows: list[bytes], priority: int) -> None:
        self.received[node] = self.received.get(node, 0) + len(rows)


class Progress:
    def expect_sync(self, table: str) -> None:
        pass

    def sync_target(self) -> int:
        return 1

    def report_synced(self, table: str, version: int) -> None:
        pass


@pytest.fixture
def db(tmp_path):
    database = open_db("sqlite", tmp_path / "meta", fsync=False)
    yield database
    database.close()


def test_handing_block_refs_over_lets_their_counts_go(db):
    refcounts = RefCounts(db, grace_ms=0)
    table = Table(BlockRefTable(refcounts), db, LeftReplication(), ME)
    holders = NewHolders()
    sync = TableSync(table, holders, interval=60, progress=Progress())

    async def main() -> int:
        await table.local_merge(
            [
                BlockRef(KEPT, b"v1"),
                BlockRef(KEPT, b"v2"),
                BlockRef(GONE, b"v3"),
                BlockRef(GONE, b"v3", deleted=True),
            ]
        )
        assert (refcounts.get(KEPT), refcounts.get(GONE)) == (2, 0)
        return await sync.sync_all()

    assert asyncio.run(main()) == 3  # two references and a tombstone
    assert table.tree.count() == 0
    assert holders.received == {A: 3, B: 3, C: 3}
    count, deletable_at = refcounts.entry(KEPT)
    assert count == 0 and deletable_at > 0  # the block GC decides what happens to the copy
    assert refcounts.get(GONE) == 0
