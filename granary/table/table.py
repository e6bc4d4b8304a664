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
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass
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
from granary.table.paxos import (
    ZERO,
    AcceptorState,
    Ballot,
    QuorumCount,
    next_ballot,
    on_accept,
    on_prepare,
)
from granary.table.quorum import QuorumError, call_nearest, retrieve_exception
from granary.table.replication import Replication, call_write_sets
from granary.table.scan import RangePage, ReplicaScan, ScanBounds, merge_scans, scan_bounded
from granary.table.schema import Entry, TableSchema
from granary.telemetry import tracing
from granary.util.time import now_ms
from granary.util.waits import sleep_until

if TYPE_CHECKING:
    from granary.table.gc import TombstoneGc

E = TypeVar("E", bound=Entry)
T = TypeVar("T")
log = logging.getLogger("granary.table")

QUEUE_BATCH = 256
RANGE_PAGE = 1000
CONDITIONAL_ATTEMPTS = 8
CONDITIONAL_DEADLINE = 10.0
"""A conditional update gives up after this many rounds, or once this many seconds passed."""
_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(AcceptorState)

PhaseAnswer = tuple[bool, Ballot, bytes | None, int]
"""A node's answer to Prepare or Accept: taken?, its promised ballot, its row (Prepare),
its clock in ms when it answered."""


@dataclass(frozen=True)
class Round:
    """What a conditional update's decision knows of its round."""

    counter: int
    """The ballot's counter, with which a change is to be stamped (`paxos.on_prepare`)."""
    clock_ms: int
    """The lowest clock among the acceptors that promised: a decision that depends on
    time (has a retention ended?) takes this one, so no single clock running ahead
    can hasten it."""


class ConditionalConflict(Exception):
    """A conditional update gave up: competing rounds, or too few acceptors answered.

    `maybe_applied`: an Accept carrying the update's own change was sent, so it
    may still be committed (by a later round's write-back); the caller cannot
    say it was not.
    """

    def __init__(self, maybe_applied: bool, reason: str) -> None:
        super().__init__(reason)
        self.maybe_applied = maybe_applied


@dataclass(frozen=True)
class Decision(Generic[E, T]):
    """What a conditional update's decision function makes of the row a round saw.

    `row` is written back to the acceptors: the row seen, with the update's
    change merged in if it is made (a refusal writes back what it saw, so
    that what it was refused on stays on a quorum). `changes`: the row carries
    the update's own change. `result` is what `conditional_update` returns.
    `at_least`: instead, redo the round with a ballot counter of at least this
    (the row holds something stamped at or after this round's counter).
    """

    row: E | None
    result: T
    changes: bool
    at_least: int | None = None


class TablePeers(Protocol):
    """How a table reaches the same table on another node."""

    async def merge(self, node: bytes, table: str, entries: list[bytes]) -> None: ...

    async def get(self, node: bytes, table: str, pk: bytes, sk: bytes) -> bytes | None: ...

    async def prepare(
        self, node: bytes, table: str, pk: bytes, sk: bytes, ballot: Ballot
    ) -> PhaseAnswer: ...

    async def accept(
        self, node: bytes, table: str, pk: bytes, sk: bytes, ballot: Ballot, row: bytes | None
    ) -> PhaseAnswer: ...

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
        self.paxos_tree = db.tree(f"{schema.name}:paxos")
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

    # ---- conditional updates: one round per update (granary/table/paxos.py) ----

    async def local_prepare(self, pk: bytes, sk: bytes, ballot: Ballot) -> PhaseAnswer:
        """This node as an acceptor: promise `ballot` if its counter is above every
        promise's (`paxos.on_prepare`), and answer the row, in one transaction."""
        key = storage_key(pk, sk)

        def step(tx: Tx) -> PhaseAnswer:
            raw = tx.get(self.paxos_tree, key)
            state, ok = on_prepare(_decode_state(raw), ballot)
            if ok:
                tx.put(self.paxos_tree, key, _state_encoder.encode(state))
            return ok, state.promised, tx.get(self.tree, key) if ok else None, now_ms()

        return await self.db.transact(step)

    async def local_accept(
        self, pk: bytes, sk: bytes, ballot: Ballot, row: bytes | None
    ) -> PhaseAnswer:
        """This node as an acceptor: take `row` at `ballot` unless a higher ballot was
        promised; the row is merged into the local one as any write is."""
        key = storage_key(pk, sk)

        def step(tx: Tx) -> PhaseAnswer:
            state, ok = on_accept(_decode_state(tx.get(self.paxos_tree, key)), ballot)
            if ok:
                tx.put(self.paxos_tree, key, _state_encoder.encode(state))
                if row is not None:
                    self.merge_in_tx(tx, self.decode(row))
            return ok, state.promised, None, now_ms()

        return await self.db.transact(step)

    async def conditional_update(
        self,
        pk: bytes,
        sk: bytes,
        decide: Callable[[E | None, Round], Decision[E, T]],
        before_accept: Callable[[Decision[E, T]], Awaitable[None]] | None = None,
    ) -> T:
        """Read-decide-write one row atomically among its replicas, without a leader.

        Each attempt is a round: Prepare to every node of every active write set
        (a majority of each promising), `decide` on the merge of the rows they
        answered and the `Round` (its ballot counter, with which a change is to
        be stamped, and its acceptors' lowest clock), Accept of the decided row (a majority
        of each taking it). An attempt that finds a higher ballot or too few
        nodes is retried with a higher ballot after a random pause; `decide`
        must recognise its own change in a row (an earlier attempt may have
        committed it). The write guard is held throughout, so the sets stay the
        ones the round uses. Raises ConditionalConflict when it gives up.

        `before_accept` is awaited with each decision that carries the change,
        before its Accept is sent: what a later round may commit from then on
        can be recorded durably first (`Objects.settle_version` needs it).
        """
        maybe_applied = False
        highest = ZERO
        deadline = time.monotonic() + CONDITIONAL_DEADLINE
        reason = "no attempt"
        with self.replication.write_guard():
            sets = self.replication.write_sets(self._partition(pk))
            for attempt in range(CONDITIONAL_ATTEMPTS):
                if attempt:
                    await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
                    if time.monotonic() > deadline:
                        break
                ballot = next_ballot(highest, self.local_node, now_ms())
                promises = QuorumCount(sets)
                rows, clocks = await _run_phase(
                    promises, partial(self._prepare_on, pk=pk, sk=sk, ballot=ballot)
                )
                highest = max(highest, promises.highest_refusal, ballot)
                if not promises.reached:
                    reason = "too few promises"
                    continue
                seen = _merge_all([self.decode(r) for r in rows if r is not None])
                decision = decide(seen, Round(ballot[0], min(clocks)))
                if decision.at_least is not None:
                    highest = max(highest, (decision.at_least - 1, b"", 0))
                    reason = "a row stamped after the ballot"
                    continue
                maybe_applied = maybe_applied or decision.changes
                if decision.changes and before_accept is not None:
                    await before_accept(decision)
                row = None if decision.row is None else self.encode(decision.row)
                accepts = QuorumCount(sets)
                await _run_phase(
                    accepts, partial(self._accept_on, pk=pk, sk=sk, ballot=ballot, row=row)
                )
                highest = max(highest, accepts.highest_refusal)
                if accepts.reached:
                    return decision.result
                reason = "too few accepts"
        raise ConditionalConflict(
            maybe_applied, f"{self.name}: {reason} after {attempt + 1} rounds"
        )

    async def _prepare_on(self, node: bytes, pk: bytes, sk: bytes, ballot: Ballot) -> PhaseAnswer:
        if node == self.local_node:
            return await self.local_prepare(pk, sk, ballot)
        return await self._require_peers().prepare(node, self.name, pk, sk, ballot)

    async def _accept_on(
        self, node: bytes, pk: bytes, sk: bytes, ballot: Ballot, row: bytes | None
    ) -> PhaseAnswer:
        if node == self.local_node:
            return await self.local_accept(pk, sk, ballot, row)
        return await self._require_peers().accept(node, self.name, pk, sk, ballot, row)

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


def _decode_state(raw: bytes | None) -> AcceptorState:
    return AcceptorState() if raw is None else _state_decoder.decode(raw)


async def _run_phase(
    count: QuorumCount, call: Callable[[bytes], Awaitable[PhaseAnswer]]
) -> tuple[list[bytes | None], list[int]]:
    """Send one phase to every node of `count`'s sets; return once every set has a
    majority of yeses or some set cannot get one. Returns the rows and the clocks of
    the yeses.

    Calls still running then go on in the background (an Accept that arrives
    late only adds to the row)."""
    tasks = {asyncio.ensure_future(call(node)): node for node in count.nodes}
    rows: list[bytes | None] = []
    clocks: list[int] = []
    pending = set(tasks)
    while pending and not count.reached and not count.lost:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            failure = task.exception()
            if failure is not None:
                log.debug("round phase on %s failed: %r", tasks[task].hex()[:16], failure)
                count.add(tasks[task], False)
                continue
            ok, promised, row, clock = task.result()
            count.add(tasks[task], ok, None if ok else promised)
            if ok:
                rows.append(row)
                clocks.append(clock)
    for task in pending:
        task.add_done_callback(retrieve_exception)
    return rows, clocks


def _merge_all(entries: list[E]) -> E | None:
    merged: E | None = None
    for entry in entries:
        merged = entry if merged is None else merged.merge(entry)
    return merged
