"""Tombstone GC: a deletion is forgotten only once every holder, in every active
layout version, has it."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from granary.db import open_db
from granary.table.gc import TombstoneGc
from granary.table.schema import TableSchema
from granary.table.table import Table

ME, A, B, C = b"m" * 32, b"a" * 32, b"b" * 32, b"c" * 32


class Row(msgspec.Struct):
    key: str
    value: int  # below 0: a tombstone
    timestamp: int

    def merge(self, other: Row) -> Row:
        return max(self, other, key=lambda row: (row.timestamp, row.value))


class Rows(TableSchema[Row]):
    name = "rows"
    entry_type = Row

    def partition_key(self, entry: Row) -> bytes:
        return b"rows"

    def sort_key(self, entry: Row) -> bytes:
        return entry.key.encode()

    def is_tombstone(self, entry: Row) -> bool:
        return entry.value < 0


class MovingReplication:
    """A partition held by ME, A, B in the old layout and ME, A, C in the new one."""

    full_copy = False

    def write_sets(self, partition: int) -> list[list[bytes]]:
        return [[ME, A, B], [ME, A, C]]

    def storage_nodes(self, partition: int) -> list[bytes]:
        return [ME, A, C]


class Peers:
    def __init__(self, down: frozenset[bytes] = frozenset()) -> None:
        self.down = down
        self.pushed: list[bytes] = []
        self.deleted: list[bytes] = []

    async def merge(self, node: bytes, table: str, entries: list[bytes]) -> None:
        if node in self.down:
            raise ConnectionError("down")
        self.pushed.append(node)

    async def delete_if_equal(self, node: bytes, table: str, key: bytes, digest: bytes) -> bool:
        self.deleted.append(node)
        return True


@pytest.fixture
def table(tmp_path):
    db = open_db("sqlite", tmp_path / "meta", fsync=False)
    yield Table(Rows(), db, MovingReplication(), ME)
    db.close()


def collect(table: Table, peers: Peers) -> tuple[int, Row | None]:
    gc = TombstoneGc(table, peers, delay_ms=0)

    async def main() -> tuple[int, Row | None]:
        await table.local_merge([Row("k", 1, 1)])
        await table.local_merge([Row("k", -1, 2)])
        settled = await gc.collect()
        return settled, table.local_get(b"rows", b"k")

    return asyncio.run(main())


def test_a_tombstone_reaches_the_nodes_of_every_active_version_before_it_is_forgotten(table):
    peers = Peers()
    settled, row = collect(table, peers)
    assert settled == 1
    assert row is None
    assert sorted(peers.pushed) == sorted([A, B, C])
    assert sorted(peers.deleted) == sorted([A, B, C])


def test_a_tombstone_an_old_holder_did_not_take_is_kept(table):
    peers = Peers(down=frozenset({B}))  # B holds the partition in the old layout only
    settled, row = collect(table, peers)
    assert settled == 0
    assert row == Row("k", -1, 2)
    assert peers.deleted == []
