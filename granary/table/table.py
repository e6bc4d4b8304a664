"""A replicated table of CRDT entries.

Every write merges the entry into each storage node of its partition, in
every active layout version, and returns once each version's nodes reached
the write quorum; every read asks the read quorum of the nodes of the layout
version the cluster reads from, and merges the answers. The local node is
reached by a direct call, other nodes through the `TablePeers` transport, so
a one-node cluster runs the same code path as a large one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import msgspec

from granary.db.base import Db, Tx
from granary.net.hedging import Hedging
from granary.table.keys import (
    SORT_KEY_INLINE,
    encode_sort_key,
    partition_hash,
    partition_of,
    prefix_end,
    resort_long_runs,
    storage_key,
)
from granary.table.merkle import MerkleIndex
from granary.table.metrics import TableCounts
from granary.table.quorum import QuorumError, call_nearest
from granary.table.replication import Replication, call_write_sets
from granary.table.scan import RangePage, ReplicaScan, ScanBounds, merge_scans, scan_bounded
from granary.table.schema import Entry, TableSchema
from granary.telemetry import tracing
from granary.util.waits import sleep_until

if TYPE_CHECKING:
    from granary.table.gc import TombstoneGc

E = TypeVar("E", bound=Entry)
log = logging.getLogger("granary.table")

QUEUE_BATCH = 256
RANGE_PAGE = 1000


class TablePeers(Protocol):
    """How a table reaches the same table on another node."""

    async def merge(self, node: bytes, table: str, entries: list[bytes]) -> None: ...

    async def get(self, node: bytes, table: str, pk: bytes, sk: bytes) -> bytes | None: ...

    async def scan(
        self,
        node: bytes,
        table: str,
        pk: bytes,
        start: bytes | None,
        filter: str | None,
        limit: int,
    ) -> tuple[list[bytes], bytes | None]: ...


class Table(Generic[E]):
    def __init__(
        self,
        schema: TableSchema[E],
        db: Db,
        replication: Replication,
        local_node: bytes,
        peers: TablePeers | None = None,
    ) -> None:
        self.schema = schema
        self.db = db
        self.replication = replication
        self.local_node = local_node
        self.peers = peers
        self.tree = db.tree(f"{schema.name}:table")
        self.queue_tree = db.tree(f"{schema.name}:insert_queue")
        self.merkle = MerkleIndex(db, schema.name, self.tree)
        self.nearest_first: Callable[[list[bytes]], list[bytes]] = list
        self.hedging: Hedging | None = None
        self.tombstone_gc: TombstoneGc | None = None
        self.scan_bounds = ScanBounds()
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(schema.entry_type)
        self.queue_wakeup = asyncio.Event()
        self.counts = TableCounts(schema.name)
        # Span names, built once (not per call on the request path).
        self._span_insert = f"{schema.name}.insert"
        self._span_get = f"{schema.name}.get"
        self._span_get_range = f"{schema.name}.get_range"

    @property
    def name(self) -> str:
        return self.schema.name

    def encode(self, entry: E) -> bytes:
        return self._encoder.encode(entry)

    def decode(self, raw: bytes) -> E:
        return self._decoder.decode(raw)

    def entry_key(self, entry: E) -> bytes:
        return storage_key(self.schema.partition_key(entry), self.schema.sort_key(entry))

    # ---- local storage -------------------------------------------------

    def local_get(self, pk: bytes, sk: bytes) -> E | None:
        raw = self.tree.get(storage_key(pk, sk))
        return None if raw is None else self.decode(raw)

    def local_range(self, pk: bytes, start: bytes | None = None) -> Iterator[E]:
        """Entries of one partition key in sort-key order, from `start` on."""
        for _, entry in self._local_rows(pk, start):
            yield entry

    def _local_rows(self, pk: bytes, start: bytes | None) -> Iterator[tuple[bytes, E]]:
        """(stored bytes, entry) of one partition key in sort-key order, from `start` on."""
        prefix = partition_hash(pk)
        low = prefix + (encode_sort_key(start)[:SORT_KEY_INLINE] if start else b"")
        high = prefix_end(prefix)
        rows = (
            (key[len(prefix) :], (value, self.decode(value)))
            for key, value in self.tree.range(low, high)
        )
        for _, (raw, entry) in resort_long_runs(rows, lambda row: self.schema.sort_key(row[1])):
            if start is not None and self.schema.sort_key(entry) < start:
                continue
            yield raw, entry

    def tx_get(self, tx: Tx, pk: bytes, sk: bytes) -> E | None:
        """One local row, read inside a write transaction (for schema hooks)."""
        raw = tx.get(self.tree, storage_key(pk, sk))
        return None if raw is None else self.decode(raw)

    def tx_rows(self, tx: Tx, pk: bytes) -> Iterator[E]:
        """The local rows of a partition key, read inside a write transaction."""
        prefix = partition_hash(pk)
        for _, value in tx.range(self.tree, prefix, prefix_end(prefix)):
            yield self.decode(value)

    def merge_in_tx(self, tx: Tx, entry: E) -> E:
        """Merge one entry into the local copy inside a write transaction."""
        key = self.entry_key(entry)
        old_raw = tx.get(self.tree, key)
        old = None if old_raw is None else self.decode(old_raw)
        new = entry if old is None else old.merge(entry)
        new_raw = self.encode(new)
        changed = new_raw != old_raw
        if changed:
            tx.put(self.tree, key, new_raw)
            self.merkle.update(tx, key, old_raw, new_raw)
            if self.tombstone_gc is not None and self.schema.is_tombstone(new):
                self.tombstone_gc.schedule(tx, key, new_raw)
        if changed or entry != new:
            self.schema.updated(tx, old, new, entry)
        return new

    async def local_merge(self, entries: list[E]) -> None:
        await self.db.transact(lambda tx: [self.merge_in_tx(tx, e) for e in entries])

    # ---- replicated operations ----------------------------------------

    def _partition(self, pk: bytes) -> int:
        return partition_of(partition_hash(pk))

    async def insert(self, entry: E) -> None:
        await self.insert_many([entry])

    async def insert_many(self, entries: list[E]) -> None:
        """Write entries to their partitions' nodes, at the write quorum of each active version.

        The write guard keeps this node from acknowledging a newer layout
        version until the write is over (see granary/layout/progress.py).
        """
        started = time.perf_counter()
        try:
            with (
                tracing.span(self._span_insert) as span,
                self.replication.write_guard(),
            ):
                span.set("rows", len(entries))
                by_sets: dict[tuple[tuple[bytes, ...], ...], list[E]] = {}
                for entry in entries:
                    partition = self._partition(self.schema.partition_key(entry))
                    sets = self.replication.write_sets(partition)
                    by_sets.setdefault(tuple(map(tuple, sets)), []).append(entry)
                await asyncio.gather(
                    *(
                        call_write_sets(
                            sets,
                            partial(self._merge_on, entries=group),
                            self.replication.write_quorum,
                        )
                        for sets, group in by_sets.items()
                    )
                )
        finally:
            self.counts.written(started)

    async def _merge_on(self, node: bytes, *, entries: list[E]) -> None:
        if node == self.local_node:
            await self.local_merge(entries)
        else:
            await self._require_peers().merge(node, self.name, [self.encode(e) for e in entries])

    async def get(self, pk: bytes, sk: bytes) -> E | None:
        """Read one entry at the read quorum, merging the replicas' answers."""
        nodes = self.nearest_first(self.replication.read_nodes(self._partition(pk)))
        started = time.perf_counter()
        try:
            with tracing.span(self._span_get):
                answers = await call_nearest(
                    nodes,
                    lambda node: self._get_on(node, pk, sk),
                    self.replication.read_quorum(len(nodes)),
                    self.hedging,
                )
        finally:
            self.counts.read(started)
        merged = _merge_all([a for a in answers if a is not None])
        if merged is not None and any(a is None or a != merged for a in answers):
            self._repair_later([merged])
        return merged

    async def _get_on(self, node: bytes, pk: bytes, sk: bytes) -> E | None:
        if node == self.local_node:
            return self.local_get(pk, sk)
        raw = await self._require_peers().get(node, self.name, pk, sk)
        return None if raw is None else self.decode(raw)

    async def get_range(
        self,
        pk: bytes,
        start: bytes | None = None,
        *,
        filter: str | None = None,
        limit: int = 1000,
    ) -> RangePage[E]:
        """Up to `limit` entries from `start` on passing the schema's named `filter`.

        One bounded read (see table/scan.py): each replica of the read quorum
        scans a bounded number of rows and bytes, and the merged answer is cut
        at the smallest of their horizons. The page may hold fewer than
        `limit` entries, even none, while the range goes on: continue from
        `page.next_start` until it is None.
        """
        if limit < 1:
            raise ValueError("a range read needs a limit of at least 1")
        nodes = self.nearest_first(self.replication.read_nodes(self._partition(pk)))
        started = time.perf_counter()
        try:
            with tracing.span(self._span_get_range) as span:
                span.set("limit", limit)
                answers = await call_nearest(
                    nodes,
                    lambda node: self._scan_on(node, pk, start, filter, limit),
                    self.replication.read_quorum(len(nodes)),
                    self.hedging,
                )
        finally:
            self.counts.read(started)
        page, stale = merge_scans(answers, self.schema.sort_key, self._filter(filter), limit)
        if stale:
            self._repair_later(stale)
        return page

    async def range_entries(
        self, pk: bytes, start: bytes | None = None, *, filter: str | None = None
    ) -> AsyncGenerator[E, None]:
        """Every entry from `start` on passing `filter`, read one bounded page at a time."""
        position: bytes | None = start
        while True:
            page = await self.get_range(pk, position, filter=filter, limit=RANGE_PAGE)
            for entry in page.entries:
                yield entry
            position = page.next_start
            if position is None:
                return

    def _filter(self, name: str | None) -> Callable[[E], bool]:
        if name is None:
            return lambda entry: True
        return self.schema.filters[name]

    async def _scan_on(
        self, node: bytes, pk: bytes, start: bytes | None, filter: str | None, limit: int
    ) -> ReplicaScan[E]:
        if node == self.local_node:
            rows, horizon = self.local_scan(pk, start, filter, limit)
            return ReplicaScan([entry for _, entry in rows], horizon)
        raws, horizon = await self._require_peers().scan(node, self.name, pk, start, filter, limit)
        return ReplicaScan([self.decode(raw) for raw in raws], horizon)

    def local_scan(
        self, pk: bytes, start: bytes | None, filter: str | None, limit: int
    ) -> tuple[list[tuple[bytes, E]], bytes | None]:
        """This node's part of a range read: its rows from `start` on, within `scan_bounds`.

        Returns (stored bytes, entry) of every row scanned and the horizon
        (see table/scan.py).
        """
        return scan_bounded(
            self._local_rows(pk, start),
            self.schema.sort_key,
            self._filter(filter),
            limit,
            self.scan_bounds,
        )

    def _repair_later(self, entries: list[E]) -> None:
        task = asyncio.ensure_future(self.insert_many(entries))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _require_peers(self) -> TablePeers:
        if self.peers is None:
            raise RuntimeError(f"table {self.name}: no transport to reach other nodes")
        return self.peers

    # ---- insert queue: cascades that must reach other partitions ------

    def queue_insert(self, tx: Tx, entry: E) -> None:
        """Queue an entry for a replicated insert once `tx` commits."""
        key = self.entry_key(entry)
        queued = tx.get(self.queue_tree, key)
        if queued is not None:
            entry = self.decode(queued).merge(entry)
        tx.put(self.queue_tree, key, self.encode(entry))
        tx.on_commit(self.queue_wakeup.set)

    async def run_queue_worker(self, stop: asyncio.Event) -> None:
        """Drain the insert queue until `stop` is set."""
        while not stop.is_set():
            self.queue_wakeup.clear()
            try:
                drained = await self.process_queue_batch()
            except Exception as error:
                # Replicas out of reach are expected (they come back); anything
                # else is a bug worth its traceback.
                unreachable = isinstance(error, QuorumError)
                log.log(
                    logging.INFO if unreachable else logging.ERROR,
                    "table %s: insert queue batch failed, retrying: %s",
                    self.name,
                    error,
                    exc_info=not unreachable,
                )
                drained = 0
                await sleep_until(stop, 5.0)
            if drained == 0:
                await sleep_until(stop, 10.0, self.queue_wakeup)

    async def process_queue_batch(self) -> int:
        """Insert one batch of queued entries; return how many were drained."""
        batch = []
        for key, raw in self.queue_tree.range():
            batch.append((key, raw))
            if len(batch) >= QUEUE_BATCH:
                break
        if not batch:
            return 0
        await self.insert_many([self.decode(raw) for _, raw in batch])

        def remove_unchanged(tx: Tx) -> None:
            for key, raw in batch:
                if tx.get(self.queue_tree, key) == raw:
                    tx.delete(self.queue_tree, key)

        await self.db.transact(remove_unchanged)
        return len(batch)


def _merge_all(entries: list[E]) -> E | None:
    merged: E | None = None
    for entry in entries:
        merged = entry if merged is None else merged.merge(entry)
    return merged
