"""Anti-entropy between two replicas of a table, in one process: their partition
holds more rows than one page of row digests, and they still converge exactly,
with every reply bounded.

The two nodes are real tables over SQLite, each serving the other through its
real `TableRpc`; only the wire is a loopback that, like the cluster transport,
refuses a body over its size limit (here a small one).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from granary.db import open_db
from granary.table import rpc as rpc_module
from granary.table import sync as sync_module
from granary.table.merkle import position_of
from granary.table.rpc import TableRpc
from granary.table.schema import TableSchema
from granary.table.sync import TableSync
from granary.table.table import Table

A, B = b"a" * 32, b"b" * 32
BUCKET = b"one-big-bucket"  # every row in one partition
BODY_LIMIT = 64 * 1024


class Thing(msgspec.Struct, array_like=True):
    pk: bytes
    sk: bytes
    version: int
    value: bytes
    deleted: bool = False

    def merge(self, other: Thing) -> Thing:
        return max(self, other, key=lambda t: (t.version, t.deleted, t.value))


class Things(TableSchema[Thing]):
    name = "things"
    entry_type = Thing

    def partition_key(self, entry: Thing) -> bytes:
        return entry.pk

    def sort_key(self, entry: Thing) -> bytes:
        return entry.sk

    def is_tombstone(self, entry: Thing) -> bool:
        return entry.deleted


class BothHoldAll:
    full_copy = False

    def write_sets(self, partition: int) -> list[list[bytes]]:
        return [[A, B]]

    def storage_nodes(self, partition: int) -> list[bytes]:
        return [A, B]

    def write_quorum(self, nodes: int) -> int:
        return nodes


class Progress:
    def __init__(self) -> None:
        self.synced: list[str] = []

    def expect_sync(self, table: str) -> None:
        pass

    def sync_target(self) -> int:
        return 1

    def report_synced(self, table: str, version: int) -> None:
        self.synced.append(table)


class Loopback:
    """The wire between the nodes: delivers calls to the other node's handlers."""

    def __init__(self) -> None:
        self.handlers: dict[tuple[bytes, str], object] = {}
        self.largest_body = 0
        self.calls = 0

    def node(self, node: bytes) -> NodeNet:
        return NodeNet(self, node)

    async def deliver(self, source: bytes, node: bytes, endpoint: str, body: bytes) -> bytes:
        self._check(body)
        reply, _ = await self.handlers[node, endpoint](source, body, None)
        self._check(reply)
        self.calls += 1
        return reply

    def _check(self, body: bytes) -> None:
        self.largest_body = max(self.largest_body, len(body))
        if len(body) > BODY_LIMIT:
            raise ValueError(f"an RPC body of {len(body)} bytes is over {BODY_LIMIT}")


class NodeNet:
    def __init__(self, wire: Loopback, node: bytes) -> None:
        self.wire = wire
        self.node = node

    def endpoint(self, name: str, handler: object) -> None:
        self.wire.handlers[self.node, name] = handler

    async def call(
        self, node: bytes, endpoint: str, body: bytes, *, priority: int
    ) -> tuple[bytes, None]:
        return await self.wire.deliver(self.node, node, endpoint, body), None


@pytest.fixture
def replicas(tmp_path: Path):
    wire = Loopback()
    dbs, tables, syncs = [], [], []
    for node in (A, B):
        db = open_db("sqlite", tmp_path / node.hex()[:4], fsync=False)
        table = Table(Things(), db, BothHoldAll(), node)
        rpc = TableRpc(wire.node(node), [table])
        dbs.append(db)
        tables.append(table)
        syncs.append(TableSync(table, rpc, interval=60, progress=Progress()))
    yield wire, tables, syncs
    for db in dbs:
        db.close()


def thing(i: int, version: int = 1, *, deleted: bool = False) -> Thing:
    return Thing(BUCKET, b"key-%06d" % i, version, b"" if deleted else b"value %d" % i, deleted)


def contents(table: Table) -> dict[bytes, bytes]:
    return dict(table.tree.range())


def test_two_replicas_of_a_partition_bigger_than_a_page_converge_exactly(replicas) -> None:
    _wire, (a, b), (sync_a, _) = replicas
    sync_a.page_rows = 37  # many pages, none aligned with the other side's
    on_a = [thing(i) for i in range(0, 600)]  # 400..599 only here
    on_b = [thing(i) for i in range(0, 400)] + [thing(i) for i in range(600, 900)]
    on_a += [thing(i, 2) for i in range(100, 150)]  # newer here
    on_b += [thing(i, 3) for i in range(150, 200)]  # newer there
    on_b += [thing(i, 4, deleted=True) for i in range(200, 260)]  # deleted there
    on_a += [thing(i, 4, deleted=True) for i in range(880, 890)]  # a deletion of B-only rows
    expected: dict[bytes, Thing] = {}
    for entry in on_a + on_b:
        key = a.entry_key(entry)
        expected[key] = entry if key not in expected else expected[key].merge(entry)

    async def scenario() -> int:
        await a.local_merge(on_a)
        await b.local_merge(on_b)
        return await sync_a.sync_all()

    exchanged = asyncio.run(scenario())
    assert contents(a) == contents(b) == {k: a.encode(v) for k, v in sorted(expected.items())}
    assert a.merkle.partition_digests() == b.merkle.partition_digests()
    only_a, only_b, held_differently = 200, 300 - 10, 50 + 50 + 60 + 10
    assert exchanged == only_a + only_b + 2 * held_differently  # pushed and pulled
    assert sync_a.complete


def test_a_partition_whose_row_digests_exceed_one_reply_still_syncs(replicas) -> None:
    """With every row digest of the partition in one reply, the reply went over the
    body limit and the sync of that partition never completed."""
    wire, (a, b), (sync_a, _) = replicas
    rows = [thing(i) for i in range(5000)]

    async def scenario() -> int:
        await b.local_merge(rows)
        return await sync_a.sync_all()

    assert asyncio.run(scenario()) == 5000
    assert contents(a) == contents(b) and len(contents(a)) == 5000
    assert wire.largest_body <= BODY_LIMIT


def test_a_replica_still_indexing_old_rows_refuses_row_digests(replicas) -> None:
    _wire, (a, b), (sync_a, sync_b) = replicas

    async def scenario() -> None:
        await b.local_merge([thing(i) for i in range(10)])
        b.merkle.rows_indexed = False  # as while B indexes the rows of an older release
        await sync_a.sync_all()
        assert not sync_a.complete and contents(a) == {}
        await sync_b.sync_all()  # B's own pass builds its index first
        await sync_a.sync_all()

    asyncio.run(scenario())
    assert sync_a.complete and contents(a) == contents(b)


class HeldByBOnly(BothHoldAll):
    """A new layout: B holds every partition, A none."""

    def write_sets(self, partition: int) -> list[list[bytes]]:
        return [[B]]

    def storage_nodes(self, partition: int) -> list[bytes]:
        return [B]


def test_a_partition_is_handed_over_page_by_page(replicas) -> None:
    _wire, (a, b), (sync_a, _) = replicas
    sync_a.page_rows = 50
    rows = [thing(i) for i in range(420)]

    async def scenario() -> int:
        await a.local_merge(rows)
        await b.local_merge(rows[:100])
        a.replication = HeldByBOnly()
        return await sync_a.sync_all()

    assert asyncio.run(scenario()) == 420
    assert contents(a) == {} and len(contents(b)) == 420
    assert a.merkle.partition_digests() == {}


def test_a_row_written_during_its_handover_is_kept_for_the_next_pass(replicas) -> None:
    wire, (a, b), (sync_a, _) = replicas
    sync_a.page_rows = 50
    rows = [thing(i) for i in range(120)]
    first_row = min(range(120), key=lambda i: position_of(a.entry_key(rows[i])))
    late = thing(first_row, version=9)  # a newer write of a row of the first page
    deliver = wire.deliver

    async def write_late_during_the_first_push(source, node, endpoint, body):
        reply = await deliver(source, node, endpoint, body)
        if node == B and contents(b) and a.local_get(late.pk, late.sk) != late:
            await a.local_merge([late])
        return reply

    wire.deliver = write_late_during_the_first_push

    async def scenario() -> tuple[int, dict[bytes, bytes], int]:
        await a.local_merge(rows)
        a.replication = HeldByBOnly()
        first = await sync_a.sync_all()
        kept = contents(a)
        return first, kept, await sync_a.sync_all()

    first, kept, second = asyncio.run(scenario())
    assert kept == {a.entry_key(late): a.encode(late)} and first == 119
    assert second == 1 and contents(a) == {}
    assert b.local_get(late.pk, late.sk) == late and len(contents(b)) == 120


def test_rows_travel_in_calls_bounded_in_bytes(replicas, monkeypatch) -> None:
    wire, (a, b), (sync_a, _) = replicas
    monkeypatch.setattr(rpc_module, "FETCH_BYTES", 2000)
    monkeypatch.setattr(sync_module, "BYTES_PER_CALL", 2000)
    big = b"x" * 600

    async def scenario() -> int:
        await a.local_merge([Thing(BUCKET, b"a-%02d" % i, 1, big) for i in range(30)])
        await b.local_merge([Thing(BUCKET, b"b-%02d" % i, 1, big) for i in range(30)])
        return await sync_a.sync_all()

    assert asyncio.run(scenario()) == 60
    assert contents(a) == contents(b) and len(contents(a)) == 60
    row_bytes = len(a.encode(Thing(BUCKET, b"a-00", 1, big)))
    assert wire.largest_body <= 2000 + row_bytes + 64  # the bound, one row past it, framing
