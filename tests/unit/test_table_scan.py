"""Bounded range reads: one replica's bounded scan, the merge of several replicas'
answers at the smallest horizon, and paging a real `Table` over three replicas
that disagree (deletions on one, missing rows on another)."""

from __future__ import annotations

import asyncio
from contextlib import nullcontext

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from granary.db import open_db
from granary.table.scan import ReplicaScan, ScanBounds, merge_scans, scan_bounded
from granary.table.schema import TableSchema
from granary.table.table import Table

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32
PK = b"bucket"


class Row(msgspec.Struct, frozen=True):
    key: str
    value: int  # below 0: a deletion
    timestamp: int
    padding: bytes = b""

    def merge(self, other: Row) -> Row:
        return max(self, other, key=lambda row: (row.timestamp, row.value))


def live(row: Row) -> bool:
    return row.value >= 0


class Rows(TableSchema[Row]):
    name = "rows"
    entry_type = Row
    filters = {"live": live}

    def partition_key(self, entry: Row) -> bytes:
        return PK

    def sort_key(self, entry: Row) -> bytes:
        return entry.key.encode()


def sort_key(row: Row) -> bytes:
    return row.key.encode()


def encoded(rows: list[Row]) -> list[tuple[bytes, Row]]:
    return [(msgspec.msgpack.encode(row), row) for row in rows]


# ---- one replica -------------------------------------------------------------


def test_a_scan_stops_at_the_limit_of_rows_passing_the_filter() -> None:
    rows = [Row("a", 1, 1), Row("b", -1, 1), Row("c", 1, 1), Row("d", 1, 1)]
    taken, horizon = scan_bounded(encoded(rows), sort_key, live, 2, ScanBounds())
    assert [row for _, row in taken] == rows[:3], "the deletion travels too"
    assert horizon == b"c"


def test_a_scan_of_rows_the_filter_drops_stops_at_the_row_bound() -> None:
    rows = [Row(f"k{i:03}", -1, 1) for i in range(100)]
    taken, horizon = scan_bounded(encoded(rows), sort_key, live, 10, ScanBounds(rows=7))
    assert len(taken) == 7
    assert horizon == b"k006"


def test_a_scan_stops_at_the_byte_bound_but_takes_at_least_one_row() -> None:
    rows = [Row(f"k{i}", 1, 1, b"x" * 500) for i in range(10)]
    taken, _ = scan_bounded(encoded(rows), sort_key, live, 100, ScanBounds(bytes=1200))
    assert len(taken) == 3
    assert sum(len(raw) for raw, _ in taken) >= 1200
    one, _ = scan_bounded(encoded(rows), sort_key, live, 100, ScanBounds(bytes=10))
    assert len(one) == 1


def test_a_scan_that_reads_to_the_end_has_no_horizon() -> None:
    rows = [Row("a", 1, 1), Row("b", -1, 1)]
    taken, horizon = scan_bounded(encoded(rows), sort_key, live, 10, ScanBounds())
    assert len(taken) == 2
    assert horizon is None


# ---- merging replicas ------------------------------------------------------------


def test_a_deletion_on_one_replica_overrides_the_older_copy_on_another() -> None:
    older = ReplicaScan([Row("a", 1, 1), Row("b", 1, 1)], None)
    newer = ReplicaScan([Row("a", -1, 2)], None)
    page, stale = merge_scans([older, newer], sort_key, live, 10)
    assert page.entries == [Row("b", 1, 1)]
    assert page.horizon is None
    assert stale == [Row("a", -1, 2)]


def test_the_merged_page_is_cut_at_the_smallest_horizon() -> None:
    # `short` stopped after "b": what it holds past "b" is unknown, so "c" (live
    # on `long` only, maybe deleted on `short`) is not answered yet.
    short = ReplicaScan([Row("a", 1, 1), Row("b", -1, 1)], b"b")
    long = ReplicaScan([Row("a", 1, 1), Row("c", 1, 1), Row("d", 1, 1)], None)
    page, _ = merge_scans([short, long], sort_key, live, 10)
    assert page.entries == [Row("a", 1, 1)]
    assert page.horizon == b"b"
    assert page.next_start == b"b\x00"


def test_a_page_over_the_limit_ends_at_its_last_entry() -> None:
    first = ReplicaScan([Row("a", 1, 1), Row("c", 1, 1)], b"c")
    second = ReplicaScan([Row("a", 1, 1), Row("b", 1, 1)], b"b")
    page, _ = merge_scans([first, second], sort_key, live, 1)
    assert page.entries == [Row("a", 1, 1)]
    assert page.horizon == b"a"


def test_an_empty_page_can_still_go_on() -> None:
    dead = ReplicaScan([Row(f"k{i}", -1, 1) for i in range(5)], b"k4")
    page, _ = merge_scans([dead, ReplicaScan([], None)], sort_key, live, 10)
    assert page.entries == []
    assert page.next_start == b"k4\x00"


# ---- a real table over three replicas ------------------------------------------------


class ThreeReplicas:
    """Every row on A, B and C; reads ask all three (so every answer is merged)."""

    full_copy = False

    def read_nodes(self, partition: int) -> list[bytes]:
        return [A, B, C]

    def read_quorum(self, nodes: int) -> int:
        return nodes

    def write_sets(self, partition: int) -> list[list[bytes]]:
        return [[A, B, C]]

    def write_quorum(self, nodes: int) -> int:
        return nodes

    def write_guard(self) -> nullcontext:
        return nullcontext()


class Replicas:
    """The `TablePeers` of the three tables: scans run on the target's local store,
    and every reply is checked against the bounds."""

    def __init__(self, tables: dict[bytes, Table[Row]]) -> None:
        self.tables = tables
        self.replies: list[tuple[int, int]] = []

    async def scan(self, node, table, pk, start, filter, limit):
        rows, horizon = self.tables[node].local_scan(pk, start, filter, limit)
        self.replies.append((len(rows), sum(len(raw) for raw, _ in rows)))
        return [raw for raw, _ in rows], horizon

    async def merge(self, node, table, entries):
        target = self.tables[node]
        await target.local_merge([target.decode(raw) for raw in entries])


def three_tables(root) -> tuple[dict[bytes, Table[Row]], Replicas, list]:
    dbs = [open_db("sqlite", root / name, fsync=False) for name in ("a", "b", "c")]
    nodes = (A, B, C)
    tables = {
        node: Table(Rows(), db, ThreeReplicas(), node) for node, db in zip(nodes, dbs, strict=True)
    }
    peers = Replicas(tables)
    for table in tables.values():
        table.peers = peers
    return tables, peers, dbs


@pytest.fixture
def replicas(tmp_path):
    tables, peers, dbs = three_tables(tmp_path)
    yield tables, peers
    for db in dbs:
        db.close()


def page_through(table: Table[Row], limit: int) -> tuple[list[Row], int]:
    async def walk() -> tuple[list[Row], int]:
        found: list[Row] = []
        start: bytes | None = None
        calls = 0
        while True:
            page = await table.get_range(PK, start, filter="live", limit=limit)
            calls += 1
            assert len(page.entries) <= limit
            found.extend(page.entries)
            start = page.next_start
            if start is None:
                return found, calls

    return asyncio.run(walk())


def load(table: Table[Row], rows: list[Row]) -> None:
    asyncio.run(table.local_merge(rows))


def expected(contents: list[list[Row]]) -> list[Row]:
    merged: dict[str, Row] = {}
    for rows in contents:
        for row in rows:
            merged[row.key] = row if row.key not in merged else merged[row.key].merge(row)
    return [merged[key] for key in sorted(merged, key=str.encode) if live(merged[key])]


def test_paging_three_disagreeing_replicas_gives_the_merged_listing(replicas) -> None:
    tables, peers = replicas
    everything = [Row(f"k{i:04}", i, 1, b"p" * 300) for i in range(600)]
    deleted_on_b = [Row(f"k{i:04}", -1, 2) for i in range(100, 500)]
    load(tables[A], everything)
    load(tables[B], everything[:50] + deleted_on_b)
    load(tables[C], everything[::3])
    for table in tables.values():
        table.scan_bounds = ScanBounds(rows=40, bytes=8000)
    found, calls = page_through(tables[A], limit=25)
    assert found == expected([everything, everything[:50] + deleted_on_b, everything[::3]])
    assert [row.key for row in found][:3] == ["k0000", "k0001", "k0002"]
    assert "k0100" not in {row.key for row in found} and "k0500" in {row.key for row in found}
    assert all(rows <= 40 for rows, _ in peers.replies)
    assert all(size < 8000 + 400 for _, size in peers.replies)
    assert calls > 600 // 40


def test_a_run_of_deleted_rows_costs_bounded_calls_not_one_huge_reply(replicas) -> None:
    tables, peers = replicas
    rows = [Row(f"k{i:05}", -1, 1) for i in range(2000)] + [Row("z", 7, 1)]
    for table in tables.values():
        load(table, rows)
        table.scan_bounds = ScanBounds(rows=100)
    found, calls = page_through(tables[A], limit=10)
    assert found == [Row("z", 7, 1)]
    assert max(count for count, _ in peers.replies) <= 100
    assert calls >= 2000 // 100


@settings(max_examples=60, deadline=None)
@given(
    contents=st.lists(
        st.lists(
            st.builds(
                Row,
                key=st.sampled_from([f"k{i:02}" for i in range(30)]),
                value=st.integers(-1, 3),
                timestamp=st.integers(0, 4),
            ),
            max_size=40,
        ),
        min_size=3,
        max_size=3,
    ),
    scan_rows=st.integers(1, 6),
    limit=st.integers(1, 5),
)
def test_any_replica_contents_and_bounds_page_to_the_merged_listing(
    tmp_path_factory, contents: list[list[Row]], scan_rows: int, limit: int
) -> None:
    tables, _, dbs = three_tables(tmp_path_factory.mktemp("replicas"))
    try:
        for table, rows in zip(tables.values(), contents, strict=True):
            table.scan_bounds = ScanBounds(rows=scan_rows)
            load(table, rows)
        found, _ = page_through(tables[A], limit)
        assert found == expected(contents)
    finally:
        for db in dbs:
            db.close()
