"""Anti-entropy: make this node's partitions match the other holders'.

For each partition this node stores, it compares bucket digests with every
other holder, then the row digests of the buckets that differ, then pushes
the rows the other side lacks or holds differently and pulls the rows it
lacks itself. Merges are CRDT merges, so syncing twice or from both sides is
harmless. It runs periodically, and at once when the layout changes.
"""

from __future__ import annotations

import asyncio
import logging

from granary.table.keys import PARTITIONS
from granary.table.merkle import differing
from granary.table.rpc import BACKGROUND, TableRpc
from granary.table.table import Table
from granary.util.waits import sleep_until

log = logging.getLogger("granary.sync")

ROWS_PER_CALL = 256


class TableSync:
    def __init__(self, table: Table, rpc: TableRpc, interval: float) -> None:
        self.table = table
        self.rpc = rpc
        self.interval = interval
        self.wakeup = asyncio.Event()
        self.last_full_sync: float | None = None

    def _my_partitions(self) -> dict[int, list[bytes]]:
        """Partition -> the other nodes holding it, for the partitions held here."""
        local = self.table.local_node
        mine: dict[int, list[bytes]] = {}
        for partition in range(PARTITIONS):
            nodes = self.table.replication.storage_nodes(partition)
            if local in nodes:
                mine[partition] = [n for n in nodes if n != local]
        return mine

    async def sync_all(self) -> int:
        """One full pass over every held partition; returns the rows exchanged."""
        by_node: dict[bytes, list[int]] = {}
        for partition, others in self._my_partitions().items():
            for node in others:
                by_node.setdefault(node, []).append(partition)
        results = await asyncio.gather(
            *(self._sync_with(node, partitions) for node, partitions in by_node.items()),
            return_exceptions=True,
        )
        exchanged = 0
        for node, result in zip(by_node, results, strict=True):
            if isinstance(result, BaseException):
                log.info("sync of %s with %s failed: %s", self.table.name, node.hex()[:16], result)
            else:
                exchanged += result
        self.last_full_sync = asyncio.get_running_loop().time()
        return exchanged

    async def _sync_with(self, node: bytes, partitions: list[int]) -> int:
        theirs = await self.rpc.partition_digests(node, self.table.name)
        mine = self.table.merkle.partition_digests()
        exchanged = 0
        for partition in differing(
            {p: mine.get(p) for p in partitions if p in mine},
            {p: theirs[p] for p in partitions if p in theirs},
        ):
            exchanged += await self.sync_partition(node, partition)
        return exchanged

    async def sync_partition(self, node: bytes, partition: int) -> int:
        name = self.table.name
        merkle = self.table.merkle
        buckets = differing(
            merkle.bucket_digests(partition), await self.rpc.bucket_digests(node, name, partition)
        )
        if not buckets:
            return 0
        mine = merkle.rows_in(partition, buckets)
        theirs = await self.rpc.row_digests(node, name, partition, buckets)
        push = [key for key, digest in mine.items() if theirs.get(key) != digest]
        pull = [key for key, digest in theirs.items() if mine.get(key) != digest]
        for start in range(0, len(push), ROWS_PER_CALL):
            rows = [self.table.tree.get(key) for key in push[start : start + ROWS_PER_CALL]]
            await self.rpc.merge(
                node, name, [r for r in rows if r is not None], priority=BACKGROUND
            )
        for start in range(0, len(pull), ROWS_PER_CALL):
            rows = await self.rpc.fetch(node, name, pull[start : start + ROWS_PER_CALL])
            await self.table.local_merge([self.table.decode(r) for r in rows if r is not None])
        return len(push) + len(pull)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.wakeup.clear()
            try:
                await self.sync_all()
            except Exception:
                log.exception("anti-entropy of %s failed", self.table.name)
            await sleep_until(stop, self.interval, self.wakeup)
