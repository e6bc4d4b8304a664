"""Tombstone garbage collection: forget a deletion only once every holder has it.

A row that became a tombstone is queued with a due time (a delay long
enough for every replica to have heard of it through writes or
anti-entropy). When due: (1) the tombstone is sent to every storage node of
its partition in every active layout version (a node that is still handing
its rows over counts), all of which must accept it; (2) every one of them deletes
the row if it still holds exactly that tombstone. A node that missed the
deletion can then never bring the old row back, since all holders saw the
tombstone before any of them forgot it.
"""

from __future__ import annotations

import asyncio
import logging
import struct

import blake3

from granary.db.base import Tx
from granary.table.keys import partition_of
from granary.table.quorum import QuorumError, call_quorum
from granary.table.replication import distinct_nodes
from granary.table.table import Table
from granary.util.time import now_ms
from granary.util.waits import sleep_until

log = logging.getLogger("granary.gc")

BATCH = 256
_DUE = struct.Struct(">Q")


def value_digest(raw: bytes) -> bytes:
    return blake3.blake3(raw).digest(16)


class TombstoneGc:
    def __init__(self, table: Table, rpc, delay_ms: int) -> None:
        self.table = table
        self.rpc = rpc
        self.delay_ms = delay_ms
        self.todo = table.db.tree(f"{table.name}:gc_todo")
        table.tombstone_gc = self

    def schedule(self, tx: Tx, key: bytes, raw: bytes) -> None:
        """Queue a row that just became a tombstone (runs inside the merge transaction)."""
        tx.put(self.todo, _DUE.pack(now_ms() + self.delay_ms) + key, value_digest(raw))

    def delete_if_equal(self, tx: Tx, key: bytes, digest: bytes) -> bool:
        """Phase two on one node: drop the row if it is still the same tombstone."""
        raw = tx.get(self.table.tree, key)
        if raw is None or value_digest(raw) != digest:
            return False
        tx.delete(self.table.tree, key)
        self.table.merkle.update(tx, key, raw, None)
        self.table.schema.forgotten(tx, self.table.decode(raw))
        return True

    async def collect(self) -> int:
        """Forget the tombstones that are due; returns how many were settled."""
        end = _DUE.pack(now_ms() + 1)
        due = list(self.todo.range(None, end))[:BATCH]
        settled = 0
        for todo_key, digest in due:
            key = todo_key[_DUE.size :]
            raw = self.table.tree.get(key)
            if raw is not None and value_digest(raw) == digest:
                try:
                    await self._forget_everywhere(key, raw, digest)
                except (QuorumError, OSError) as error:
                    log.info("tombstone of %s not collected yet: %s", self.table.name, error)
                    continue
            await self._drop_todo(todo_key)
            settled += 1
        return settled

    async def _drop_todo(self, todo_key: bytes) -> None:
        await self.table.db.transact(lambda tx: tx.delete(self.todo, todo_key))

    async def _forget_everywhere(self, key: bytes, raw: bytes, digest: bytes) -> None:
        nodes = distinct_nodes(self.table.replication.write_sets(partition_of(key[0:16])))
        if not nodes:
            raise QuorumError(1, 0, [])
        await call_quorum(nodes, lambda node: self._push(node, raw), len(nodes))
        await call_quorum(nodes, lambda node: self._delete(node, key, digest), len(nodes))

    async def _push(self, node: bytes, raw: bytes) -> None:
        if node == self.table.local_node:
            return
        await self.rpc.merge(node, self.table.name, [raw])

    async def _delete(self, node: bytes, key: bytes, digest: bytes) -> None:
        if node == self.table.local_node:
            await self.table.db.transact(lambda tx: self.delete_if_equal(tx, key, digest))
        else:
            await self.rpc.delete_if_equal(node, self.table.name, key, digest)

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        while not stop.is_set():
            try:
                while await self.collect() >= BATCH:
                    pass
            except Exception:
                log.exception("tombstone collection of %s failed", self.table.name)
            await sleep_until(stop, interval)
