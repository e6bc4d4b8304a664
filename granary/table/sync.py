"""Anti-entropy: make this node's partitions match the other holders'.

For each partition this node holds in any active layout version, it compares
bucket digests with the partition's holders in every active version (so a
new holder pulls from the old ones), then the row digests of the buckets
that differ, then pushes the rows the other side lacks or holds differently
and pulls the rows it lacks itself. Merges are CRDT merges, so syncing twice
or from both sides is harmless.

A pass that reached a write quorum of every version's holders of every
partition it covers is reported to the layout manager, for the version every
node had acknowledged when it started: that is what lets reads move to a new
layout version (see granary/layout/progress.py).

A sharded table's partitions that this node holds in no active version any
more are pushed to their current holders and, once a write quorum of them
has every row, forgotten here.

It runs periodically, and at once when the layout changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

from granary.db.base import Tx
from granary.table.keys import PARTITIONS
from granary.table.merkle import differing, row_digest
from granary.table.replication import distinct_nodes
from granary.table.rpc import BACKGROUND, TableRpc
from granary.table.table import Table
from granary.util.waits import sleep_until

log = logging.getLogger("granary.sync")

ROWS_PER_CALL = 256
BUCKETS = range(256)
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
        name = self.table.name
        merkle = self.table.merkle
        buckets = differing(
            merkle.bucket_digests(partition), await self.rpc.bucket_digests(node, name, partition)
        )
        if not buckets:
            return 0
        mine = merkle.rows_in(partition, buckets)
        theirs = await self.rpc.row_digests(node, name, partition, buckets)
        to_push = [key for key, digest in mine.items() if theirs.get(key) != digest]
        to_pull = [key for key, digest in theirs.items() if pull and mine.get(key) != digest]
        for start in range(0, len(to_push), ROWS_PER_CALL):
            rows = [self.table.tree.get(key) for key in to_push[start : start + ROWS_PER_CALL]]
            await self.rpc.merge(
                node, name, [r for r in rows if r is not None], priority=BACKGROUND
            )
        for start in range(0, len(to_pull), ROWS_PER_CALL):
            rows = await self.rpc.fetch(node, name, to_pull[start : start + ROWS_PER_CALL])
            await self.table.local_merge([self.table.decode(r) for r in rows if r is not None])
        return len(to_push) + len(to_pull)

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
        holders = self.table.replication.storage_nodes(partition)
        rows = self.table.merkle.rows_in(partition, BUCKETS)
        results = await asyncio.gather(
            *(self.sync_partition(node, partition, pull=False) for node in holders),
            return_exceptions=True,
        )
        handed = sum(not isinstance(result, BaseException) for result in results)
        if not holders or handed < self.table.replication.write_quorum(len(holders)):
            return 0
        if partition in self._held():
            return 0  # a newer layout version gave it back meanwhile
        forgotten = await self.table.db.transact(lambda tx: self._forget(tx, rows))
        log.info(
            "%s: partition %d handed over, %d rows forgotten", self.table.name, partition, forgotten
        )
        return forgotten

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
            interval = self.interval if self.complete else min(self.interval, INCOMPLETE_RETRY_SECS)
            await sleep_until(stop, interval, self.wakeup)
