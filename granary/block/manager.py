"""Puts and gets blocks on the nodes that store them; deletes unreferenced ones.

Blocks are written to the storage nodes of their partition with the write
quorum and read from the first node that has a valid copy, this one first.
A block's partition is its block_ref rows' partition, so the nodes that
count a block's references are the nodes that store it. Disk work, hashing
and compression run on the thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor

import msgspec

from granary.block.codec import CorruptBlock, block_hash
from granary.block.refcount import RefCounts
from granary.block.store import BlockStore
from granary.db.base import Db
from granary.net.errors import RpcError
from granary.table.keys import partition_hash, partition_of
from granary.table.quorum import call_quorum
from granary.table.replication import Replication
from granary.util.locks import KeyedLocks
from granary.util.time import now_ms
from granary.util.waits import sleep_until

log = logging.getLogger("granary.block")

GC_BATCH = 256
PUT_ENDPOINT = "block/put"
GET_ENDPOINT = "block/get"

_encode_put = msgspec.msgpack.Encoder().encode
_decode_put = msgspec.msgpack.Decoder(tuple[bytes, bytes]).decode


class BlockUnavailable(Exception):
    """No node could return a valid copy of a block."""


class BlockManager:
    def __init__(
        self,
        db: Db,
        store: BlockStore,
        replication: Replication,
        local_node: bytes,
        executor: Executor,
        net,
        *,
        gc_grace_ms: int,
    ) -> None:
        self.net = net
        self.db = db
        self.store = store
        self.replication = replication
        self.local_node = local_node
        self.executor = executor
        self.refcounts = RefCounts(db, gc_grace_ms)
        self._locks = KeyedLocks()
        net.endpoint(PUT_ENDPOINT, self._serve_put)
        net.endpoint(GET_ENDPOINT, self._serve_get)

    def _nodes(self, block_id: bytes) -> list[bytes]:
        return self.replication.storage_nodes(partition_of(partition_hash(block_id)))

    async def _in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def put(self, block_id: bytes, data: bytes) -> None:
        """Store a block on its nodes; returns once the write quorum has it."""
        nodes = self._nodes(block_id)
        await call_quorum(
            nodes,
            lambda node: self._put_on(node, block_id, data),
            self.replication.write_quorum(len(nodes)),
        )

    async def _put_on(self, node: bytes, block_id: bytes, data: bytes) -> None:
        if node == self.local_node:
            await self.put_local(block_id, data)
        else:
            await self.net.call(node, PUT_ENDPOINT, _encode_put((block_id, data)))

    async def _serve_put(self, from_node: bytes, body: bytes, stream) -> tuple[bytes, None]:
        block_id, data = _decode_put(body)
        await self.put_local(block_id, data)
        return b"", None

    async def _serve_get(self, from_node: bytes, body: bytes, stream) -> tuple[bytes, None]:
        data = await self._in_thread(self.store.read, body)
        if data is None:
            raise RpcError("missing", f"block {body.hex()} is not stored here")
        return data, None

    async def put_local(self, block_id: bytes, data: bytes) -> None:
        # The lock orders this write against a GC deletion of the same block.
        async with self._locks.hold(block_id):
            await self._in_thread(self.store.write, block_id, data)

    async def get(self, block_id: bytes) -> bytes:
        """The verified content of a block, from the first node that has it."""
        errors: list[str] = []
        nodes = self._nodes(block_id)
        ordered = [n for n in nodes if n == self.local_node] + [
            n for n in nodes if n != self.local_node
        ]
        for node in ordered:
            try:
                data = await self._get_from(node, block_id)
            except (CorruptBlock, RpcError) as exc:
                log.warning("block %s not read from %s: %s", block_id.hex(), node.hex()[:16], exc)
                errors.append(str(exc))
                continue
            if data is not None:
                return data
            errors.append("missing")
        raise BlockUnavailable(f"block {block_id.hex()}: {', '.join(errors) or 'no holder'}")

    async def _get_from(self, node: bytes, block_id: bytes) -> bytes | None:
        if node == self.local_node:
            return await self._in_thread(self.store.read, block_id)
        data, _ = await self.net.call(node, GET_ENDPOINT, block_id)
        if await self._in_thread(block_hash, data) != block_id:
            raise CorruptBlock(f"node {node.hex()[:16]} sent a corrupt copy")
        return data

    async def collect_garbage(self) -> int:
        """Delete the blocks whose grace delay has passed; return how many.

        The file goes first and the bookkeeping after, so a crash in between
        leaves a todo item that the next pass completes, never an untracked
        file. The per-block lock orders this against a new write of the block.
        """
        deleted = 0
        for todo_key, block_id in self.refcounts.due_for_gc(GC_BATCH):
            async with self._locks.hold(block_id):
                if self.refcounts.is_deletable(block_id):
                    deleted += await self._in_thread(self.store.delete, block_id)
                await self.db.transact(
                    lambda tx, k=todo_key, b=block_id: self.refcounts.claim_for_deletion(tx, k, b)
                )
        return deleted

    async def run_gc_worker(self, stop: asyncio.Event, interval: float = 60.0) -> None:
        """Delete blocks as their grace delays expire."""
        while not stop.is_set():
            self.refcounts.became_deletable.clear()
            try:
                while await self.collect_garbage() >= GC_BATCH:
                    pass
            except Exception:
                log.exception("block GC pass failed")
            delay = interval
            due = self.refcounts.next_due_ms()
            if due is not None:
                delay = min(interval, max(0.0, (due - now_ms()) / 1000) + 0.01)
            await sleep_until(stop, delay, self.refcounts.became_deletable)
