"""Anti-entropy: make this node's partitions match the other holders'.

For each partition this node holds in any active layout version, it compares
bucket digests with the partition's holders in every active version (so a
new holder pulls from the old ones), then the row digests of the buckets
that differ, then pushes the rows the other side lacks or holds differently
and pulls the rows it lacks itself. Merges are CRDT merges, so syncing twice
or from both sides is harmless.

No step grows with the size of a partition (one bucket's objects all sit in
one): row digests are compared one bounded page at a time (both sides read
a page from the same position; the comparison stops at the smaller of the
two horizons and the next pages start just after it, see
`granary/table/merkle.py`), and rows travel in calls bounded by rows and by
bytes. A partition of any size thus syncs in bounded steps, each of them a
bounded read here and a bounded reply there.

A pass that reached a write quorum of every version's holders of every
partition it covers is reported to the layout manager, for the version every
node had acknowledged when it started: that is what lets reads move to a new
layout version (see granary/layout/progress.py).

A sharded table's partitions that this node holds in no active version any
more are handed over to their current holders one page of rows at a time:
once a write quorum of them has every row of the page, the page's rows that
are still exactly as they were when the page was read are forgotten here.

It runs periodically, and at once when the layout changes. The first pass
builds the row digest index for rows written before it existed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from functools import partial
from typing import Protocol

from granary.db.base import Tx
from granary.table.keys import PARTITIONS
from granary.table.merkle import (
    BUCKETS,
    DIGEST_PAGE_ROWS,
    after,
    compare_pages,
    differing,
    row_digest,
)
from granary.table.replication import distinct_nodes
from granary.table.rpc import BACKGROUND, TableRpc
from granary.table.table import Table
from granary.util.waits import sleep_until

log = logging.getLogger("granary.sync")

ROWS_PER_CALL = 256
BYTES_PER_CALL = 4 << 20  # rows pushed in one call (one bigger row still goes alone)
ALL_BUCKETS = range(BUCKETS)
INCOMPLETE_RETRY_SECS = 10.0  # a layout change may be waiting for this pass


class SyncProgress(Protocol):
    """Where sync passes are reported (the LayoutManager)."""

    def expect_sync(self, table: str) -> None: ...

    def sync_target(self) -> int: ...

    def report_synced(self, table: str, version: int) -> None: ...


class TableSync:
    def __init__(
        self, table: Table, rpc: TableRpc, interval: float, progress: SyncProgress
    ) -> None:
        self.table = table
        self.rpc = rpc
        self.interval = interval
        self.progress = progress
        self.wakeup = asyncio.Event()
        self.last_full_sync: float | None = None
        self.complete = False
        self.complete_pass_started: float | None = None
        """When (loop time) the last pass began, if it reached a write quorum of every
        holder; None after one that did not (see api/admin/redundancy.py)."""
        self.page_rows = DIGEST_PAGE_ROWS
        progress.expect_sync(table.name)

    def _held(self) -> dict[int, list[list[bytes]]]:
        """Partition -> its holders in each active version, for the partitions held here."""
        local = self.table.local_node
        held: dict[int, list[list[bytes]]] = {}
        for partition in range(PARTITIONS):
            sets = self.table.replication.write_sets(partition)
            if any(local in nodes for nodes in sets):
                held[partition] = sets
        return held

    async def sync_all(self) -> int:
        """One full pass over every held partition; returns the rows exchanged."""
        started = asyncio.get_running_loop().time()
        await self.table.merkle.build_row_index()
        target = self.progress.sync_target()
        held = self._held()
        local = self.table.local_node
        by_node: dict[bytes, list[int]] = {}
        for partition, sets in held.items():
            for node in distinct_nodes(sets):
                if node != local:
                    by_node.setdefault(node, []).append(partition)
        results = await asyncio.gather(
            *(self._sync_with(node, partitions) for node, partitions in by_node.items()),
            return_exceptions=True,
        )
        exchanged = 0
        failed: set[bytes] = set()
        for node, result in zip(by_node, results, strict=True):
            if isinstance(result, BaseException):
                log.info("sync of %s with %s failed: %s", self.table.name, node.hex()[:16], result)
                failed.add(node)
            else:
                exchanged += result
        quorum = self.table.replication.write_quorum
        self.complete = all(
            len(set(nodes) - failed) >= quorum(len(nodes))
            for sets in held.values()
            for nodes in sets
        )
        self.complete_pass_started = started if self.complete else None
        if self.complete:
            self.progress.report_synced(self.table.name, target)
        if not self.table.replication.full_copy:
            exchanged += await self._offload(held)
        self.last_full_sync = asyncio.get_running_loop().time()
        return exchanged

    async def _sync_with(self, node: bytes, partitions: list[int]) -> int:
        theirs = await self.rpc.partition_digests(node, self.table.name)
        mine = self.table.merkle.partition_digests()
        exchanged = 0
        for partition in differing(
            {p: mine[p] for p in partitions if p in mine},
            {p: theirs[p] for p in partitions if p in theirs},
        ):
            exchanged += await self.sync_partition(node, partition)
        return exchanged

    async def sync_partition(self, node: bytes, partition: int, *, pull: bool = True) -> int:
        """Push the rows `node` lacks or holds differently; with `pull`, fetch ours too."""
        buckets = differing(
            self.table.merkle.bucket_digests(partition),
            await self.rpc.bucket_digests(node, self.table.name, partition),
        )
        if not buckets:
            return 0
        return await self._exchange(node, partition, buckets, pull=pull)

    async def _exchange(
        self,
        node: bytes,
        partition: int,
        buckets: Iterable[int],
        start: bytes | None = None,
        end: bytes | None = None,
        *,
        pull: bool,
    ) -> int:
        """Sync the rows of some buckets from position `start` to `end` (inclusive), by pages."""
        buckets = list(buckets)
        exchanged = 0
        position = start
        while True:
            mine = self.table.merkle.rows_in(partition, buckets, position, self.page_rows)
            theirs = await self.rpc.row_digests(
                node, self.table.name, partition, buckets, position, self.page_rows
            )
            comparison = compare_pages(mine, theirs, end)
            horizon = comparison.horizon
            if horizon is not None and position is not None and horizon < position:
                raise ValueError(f"row digests of {node.hex()[:16]} went backwards")
            exchanged += await self._push(node, comparison.only_mine)
            if pull:
                exchanged += await self._pull(node, comparison.only_theirs)
            if horizon is None or horizon == end:
                return exchanged
            position = after(horizon)

    async def _push(self, node: bytes, keys: list[bytes]) -> int:
        """Send our rows of `keys` in calls of at most ROWS_PER_CALL rows and BYTES_PER_CALL."""
        batch: list[bytes] = []
        size = 0
        for key in keys:
            raw = self.table.tree.get(key)
            if raw is None:
                continue  # forgotten meanwhile
            if batch and (len(batch) >= ROWS_PER_CALL or size + len(raw) > BYTES_PER_CALL):
                await self.rpc.merge(node, self.table.name, batch, priority=BACKGROUND)
                self.table.counts.sent(node, len(batch))
                batch, size = [], 0
            batch.append(raw)
            size += len(raw)
        if batch:
            await self.rpc.merge(node, self.table.name, batch, priority=BACKGROUND)
            self.table.counts.sent(node, len(batch))
        return len(keys)

    async def _pull(self, node: bytes, keys: list[bytes]) -> int:
        """Fetch and merge `node`'s rows of `keys`; each reply is bounded by the other side."""
        for first in range(0, len(keys), ROWS_PER_CALL):
            wanted = keys[first : first + ROWS_PER_CALL]
            while wanted:
                rows = await self.rpc.fetch(node, self.table.name, wanted)
                if not rows:
                    raise ValueError(f"{node.hex()[:16]} answered no row of a fetch")
                wanted = wanted[len(rows) :]
                await self.table.local_merge([self.table.decode(r) for r in rows if r is not None])
                self.table.counts.received(node, len(rows))
        return len(keys)

    # ---- handing over partitions held no more ----------------------------------

    async def _offload(self, held: Iterable[int]) -> int:
        """Hand over the partitions with rows here but held here in no active version."""
        moved = 0
        for partition in sorted(set(self.table.merkle.partition_digests()) - set(held)):
            try:
                moved += await self._offload_partition(partition)
            except Exception as error:
                log.info("offload of %s/%d failed: %s", self.table.name, partition, error)
        return moved

    async def _offload_partition(self, partition: int) -> int:
        """Hand a partition over one page of rows at a time; returns the rows forgotten."""
        holders = self.table.replication.storage_nodes(partition)
        if not holders:
            return 0
        quorum = self.table.replication.write_quorum(len(holders))
        forgotten = 0
        position: bytes | None = None
        while True:
            page = self.table.merkle.rows_in(partition, ALL_BUCKETS, position, self.page_rows)
            if page.rows:
                last = page.rows[-1][0]  # rows past it were not read here: not compared there
                results = await asyncio.gather(
                    *(
                        self._exchange(node, partition, ALL_BUCKETS, position, last, pull=False)
                        for node in holders
                    ),
                    return_exceptions=True,
                )
                if sum(not isinstance(result, BaseException) for result in results) < quorum:
                    return forgotten
                if partition in self._held():
                    return forgotten  # a newer layout version gave it back meanwhile
                handed = {spot[1:]: digest for spot, digest in page.rows}
                forgotten += await self.table.db.transact(partial(self._forget, rows=handed))
            if page.horizon is None:
                log.info(
                    "%s: partition %d handed over, %d rows forgotten",
                    self.table.name,
                    partition,
                    forgotten,
                )
                return forgotten
            position = after(page.horizon)

    def _forget(self, tx: Tx, rows: dict[bytes, bytes]) -> int:
        """Delete the rows still exactly as they were handed over (storage key -> digest).

        A row changed since then (a late write) stays, for the next pass to hand over.
        """
        forgotten = 0
        for key, digest in rows.items():
            raw = tx.get(self.table.tree, key)
            if raw is not None and row_digest(key, raw) == digest:
                tx.delete(self.table.tree, key)
                self.table.merkle.update(tx, key, raw, None)
                self.table.schema.forgotten(tx, self.table.decode(raw))
                forgotten += 1
        return forgotten

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.wakeup.clear()
            try:
                await self.sync_all()
            except Exception:
                log.exception("anti-entropy of %s failed", self.table.name)
                self.complete = False
                self.complete_pass_started = None
            interval = self.interval if self.complete else min(self.interval, INCOMPLETE_RETRY_SECS)
            await sleep_until(stop, interval, self.wakeup)
