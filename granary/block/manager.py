"""Puts and gets blocks on the nodes that store them; deletes unreferenced ones.

Blocks are written to the storage nodes of their partition with the write
quorum, and read with hedging (see granary/net/hedging.py): the nearest holder first,
the next one too once the first is late, and the first valid answer wins.
Every copy read is verified against the block id, so a corrupt copy is never
served; a local copy found missing or corrupt (the store quarantines it) is
queued for resync. A block's partition is its block_ref rows' partition, so
the nodes that count a block's references are the nodes that store it. Disk
work, hashing and compression run on the thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Protocol, cast

from granary.block.codec import CorruptBlock, block_hash
from granary.block.holders import BlockHolders
from granary.block.refcount import RefCounts
from granary.block.resync import ResyncQueue
from granary.block.store import BlockStore
from granary.block.transfer import (
    BLOCK_RW_TIMEOUT,
    GET_ENDPOINT,
    NEED_ENDPOINT,
    PUT_ENDPOINT,
    NeedReply,
    as_stream,
    decode_need,
    encode_need,
    receive,
)
from granary.db.base import Db, Tx
from granary.net.errors import CallTimeout, PeerUnavailable, RpcError
from granary.net.hedging import Hedging, hedged_read
from granary.net.messages import BACKGROUND, NORMAL
from granary.table.quorum import call_quorum
from granary.util.file_region import FileRegion
from granary.util.locks import KeyedLocks
from granary.util.process_locks import KeyLocks
from granary.util.time import now_ms
from granary.util.waits import sleep_until

log = logging.getLogger("granary.block")

GC_BATCH = 256
REF_CHANGE_DELAY_MS = 30_000
"""A block's references are written before the block itself: check it this
much later, once the write that added the reference has had time to finish."""


class BlockUnavailable(Exception):
    """No node could return a valid copy of a block."""


class MissingCopy(Exception):
    """This node, asked as one of the block's holders, has no copy of it."""


class OffloadIncomplete(Exception):
    """Some holder could not be asked or sent the block; the local copy stays."""


class Distances(Protocol):
    """Nearest-first ordering of nodes (the peering service)."""

    def by_distance(self, nodes: Iterable[bytes]) -> list[bytes]: ...

    def rtt(self, node: bytes) -> float | None: ...


@dataclass
class ReadStats:
    """Counters of the read path (for metrics; the hedges are counted in `Hedging`)."""

    reads: int = 0
    corrupt_copies: int = 0


class BlockManager:
    def __init__(
        self,
        db: Db,
        store: BlockStore,
        holders: BlockHolders,
        local_node: bytes,
        executor: Executor,
        net,
        distances: Distances,
        *,
        gc_grace_ms: int,
        resync_retry_base_ms: int,
        locks: KeyLocks | None = None,
    ) -> None:
        self.net = net
        self.db = db
        self.store = store
        self.holders = holders
        self.replication = holders.replication
        self.local_node = local_node
        self.executor = executor
        self.distances = distances
        self.refcounts = RefCounts(db, gc_grace_ms)
        self.resync = ResyncQueue(db, resync_retry_base_ms)
        self.refcounts.changed = self._references_changed
        self.hedging = Hedging(distances.rtt, reads="block")
        self.stats = ReadStats()
        # Per block: a write against a GC deletion, resync or move of the same
        # block; shared by the node's processes when it runs several.
        self.locks = locks if locks is not None else KeyedLocks()
        net.endpoint(PUT_ENDPOINT, self._serve_put)
        net.endpoint(GET_ENDPOINT, self._serve_get)
        net.endpoint(NEED_ENDPOINT, self._serve_need)

    async def sweep_temp_files(self, *, before: float, pid: int | None = None) -> None:
        """Remove what crashed writers (all, or process `pid`) left half written."""
        removed = await self.in_thread(lambda: self.store.sweep_temp_files(before=before, pid=pid))
        if removed:
            whose = "crashed writers" if pid is None else f"process {pid}"
            log.info("removed %d unfinished block file(s) of %s", removed, whose)

    async def in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def should_hold(self, block_id: bytes) -> bool:
        return self.local_node in self.holders.current(block_id)

    def _references_changed(self, tx: Tx, block_id: bytes) -> None:
        self.resync.queue_in_tx(tx, block_id, now_ms() + REF_CHANGE_DELAY_MS)

    async def _local_problem(self, block_id: bytes) -> None:
        """A local copy is missing or was quarantined: fetch it again if we should hold it."""
        if self.should_hold(block_id):
            await self.resync.push([block_id])

    # ---- writes ------------------------------------------------------------

    async def put(self, block_id: bytes, data: bytes | bytearray) -> None:
        """Store a block on its nodes; returns once the write quorum has it."""
        nodes = self.holders.current(block_id)
        await call_quorum(
            nodes,
            lambda node: self.put_on(node, block_id, data),
            self.replication.write_quorum(len(nodes)),
        )

    async def put_on(
        self, node: bytes, block_id: bytes, data: bytes | bytearray, priority: int = NORMAL
    ) -> None:
        if node == self.local_node:
            await self.put_local(block_id, data)
        else:
            await self.net.call(
                node,
                PUT_ENDPOINT,
                block_id,
                priority=priority,
                stream=as_stream(data),
                timeout=BLOCK_RW_TIMEOUT,
            )

    async def put_local(self, block_id: bytes, data: bytes | bytearray) -> None:
        # The lock orders this write against a GC deletion of the same block.
        async with self.locks.hold(block_id):
            await self.in_thread(self.store.write, block_id, data)

    async def _serve_put(self, from_node: bytes, body: bytes, stream) -> tuple[bytes, None]:
        block_id = bytes(body)
        data = await receive(stream)
        async with self.locks.hold(block_id):
            await self.in_thread(self._verify_and_write, block_id, data)
        if self.refcounts.entry(block_id) is None:
            # Its reference is on its way, or this is an offload: check it later.
            await self.resync.push([block_id], now_ms() + REF_CHANGE_DELAY_MS)
        return b"", None

    def _verify_and_write(self, block_id: bytes, data: bytes) -> None:
        if block_hash(data) != block_id:
            raise RpcError("corrupt", f"block {block_id.hex()} arrived corrupt")
        self.store.write(block_id, data)

    # ---- reads -------------------------------------------------------------

    async def _serve_get(self, from_node: bytes, body: bytes, stream):
        block_id = bytes(body)
        try:
            data = await self.in_thread(self.store.read, block_id)
        except CorruptBlock as exc:
            self.stats.corrupt_copies += 1
            await self._local_problem(block_id)
            raise RpcError("corrupt", f"block {block_id.hex()}: {exc}") from None
        if data is None:
            await self._local_problem(block_id)
            raise RpcError("missing", f"block {block_id.hex()} is not stored here")
        return b"", as_stream(data)

    async def _serve_need(self, from_node: bytes, body: bytes, stream) -> tuple[bytes, None]:
        block_id = bytes(body)
        present = await self.in_thread(self.store.contains, block_id)
        return encode_need(NeedReply(present, self.refcounts.get(block_id) > 0)), None

    async def need(self, node: bytes, block_id: bytes, priority: int) -> NeedReply:
        reply, _ = await self.net.call(
            node, NEED_ENDPOINT, block_id, priority=priority, timeout=BLOCK_RW_TIMEOUT
        )
        return decode_need(reply)

    async def hand_to_holders(self, block_id: bytes, *, needing_only: bool) -> None:
        """Make sure the block's other holders have it, before the local copy goes.

        Sends it to every holder that lacks it; with `needing_only`, only to
        those that also count references to it (a block being collected is
        not spread again, but a holder that took its references over gets
        it). Raises OffloadIncomplete when a holder could not be asked or sent it.
        """
        holders = [n for n in self.holders.current(block_id) if n != self.local_node]
        if not holders:
            if needing_only:
                return
            raise OffloadIncomplete("the layout names no holder for this block")
        replies = await asyncio.gather(
            *(self.need(node, block_id, BACKGROUND) for node in holders), return_exceptions=True
        )
        if unanswered := _failed(holders, replies):
            raise OffloadIncomplete(f"no answer from {unanswered}")
        lacking = [
            node
            for node, reply in zip(holders, replies, strict=True)
            if isinstance(reply, NeedReply)  # every one is, once none failed
            and not reply.present
            and (reply.needed or not needing_only)
        ]
        if not lacking:
            return
        data = await self.in_thread(self.store.read, block_id)
        if data is None:
            return
        sent = await asyncio.gather(
            *(self.put_on(node, block_id, data, BACKGROUND) for node in lacking),
            return_exceptions=True,
        )
        if unsent := _failed(lacking, sent):
            raise OffloadIncomplete(f"could not send it to {unsent}")

    async def get(self, block_id: bytes, *, priority: int = NORMAL, local: bool = True) -> bytes:
        """The verified content of a block, from the nearest holder that answers in time.

        With `local` False this node's own copy is not read (resync uses that).
        """
        return cast(bytes, await self._get(block_id, priority, local, sendable=False))

    async def get_for_sending(self, block_id: bytes) -> bytes | FileRegion:
        """As `get`, but this node's own copy, stored plain, comes as a region of its
        file for a response to send without copying it (`BlockStore.read_for_sending`)."""
        return await self._get(block_id, NORMAL, True, sendable=True)

    async def _get(
        self, block_id: bytes, priority: int, local: bool, *, sendable: bool
    ) -> bytes | FileRegion:
        first, fallback = self.read_order(block_id, local=local)
        self.stats.reads += 1
        errors: list[str] = []

        async def failed(node: bytes, error: BaseException) -> None:
            await self._read_failed(node, block_id, error, errors)

        got = await hedged_read(
            first,
            lambda node: self._read_from(node, block_id, priority, sendable),
            self.hedging,
            fallback=fallback,
            failures=(CorruptBlock, RpcError, TimeoutError, MissingCopy),
            on_failure=failed,
        )
        if not got.answers:
            raise BlockUnavailable(f"block {block_id.hex()}: {', '.join(errors) or 'no holder'}")
        return got.answers[0]

    def read_order(self, block_id: bytes, *, local: bool = True) -> tuple[list[bytes], list[bytes]]:
        """The current holders in the order a read asks them, and the fallback.

        Nearest first, nodes that recently lost to a hedge last. The fallback,
        the nodes of older layout versions, is asked only once every current
        holder has failed.
        """
        current = self.holders.current(block_id)
        older = self.holders.older(block_id)
        if not local:
            current = [n for n in current if n != self.local_node]
            older = [n for n in older if n != self.local_node]
        first = self.hedging.latencies.order(self.distances.by_distance(current))
        return first, self.distances.by_distance(older)

    async def _read_failed(
        self, node: bytes, block_id: bytes, error: BaseException, errors: list[str]
    ) -> None:
        who = "this node" if node == self.local_node else f"node {node.hex()[:16]}"
        errors.append(f"{who}: {error}")
        if isinstance(error, CorruptBlock):
            self.stats.corrupt_copies += 1
        if node == self.local_node:
            await self._local_problem(block_id)
        if not isinstance(error, MissingCopy):
            # A node known to be down is no news; anything else is worth a warning.
            down = isinstance(error, PeerUnavailable) and not isinstance(error, CallTimeout)
            level = logging.DEBUG if down else logging.WARNING
            log.log(level, "block %s not read from %s: %s", block_id.hex(), who, error)

    async def _read_from(
        self, node: bytes, block_id: bytes, priority: int, sendable: bool = False
    ) -> bytes | FileRegion:
        """The block's verified content from `node` (a corrupt local copy is quarantined)."""
        if node == self.local_node:
            read = self.store.read_for_sending if sendable else self.store.read
            data = await self.in_thread(read, block_id)
            if data is None:
                raise MissingCopy("missing")
            return data
        async with asyncio.timeout(BLOCK_RW_TIMEOUT):
            _, stream = await self.net.call(
                node, GET_ENDPOINT, block_id, priority=priority, timeout=BLOCK_RW_TIMEOUT
            )
            data = await receive(stream)
        if await self.in_thread(block_hash, data) != block_id:
            raise CorruptBlock(f"node {node.hex()[:16]} sent a corrupt copy")
        return data

    # ---- deletion ----------------------------------------------------------

    async def collect_garbage(self) -> int:
        """Delete the blocks whose grace delay has passed; return how many.

        The file goes first and the bookkeeping after, so a crash in between
        leaves a todo item that the next pass completes, never an untracked
        file. The per-block lock orders this against a new write of the block.
        """
        deleted = 0
        for todo_key, block_id in self.refcounts.due_for_gc(GC_BATCH):
            if not await self._handed_over_if_needed(block_id):
                await self.db.transact(
                    partial(self.refcounts.postpone, todo_key=todo_key, block_id=block_id)
                )
                continue
            async with self.locks.hold(block_id):
                if self.refcounts.is_deletable(block_id):
                    deleted += await self.in_thread(self.store.delete, block_id)
                await self.db.transact(
                    partial(self.refcounts.claim_for_deletion, todo_key=todo_key, block_id=block_id)
                )
        return deleted

    async def _handed_over_if_needed(self, block_id: bytes) -> bool:
        """False while a copy this node should not hold may still be needed by a holder.

        A node that handed a partition over forgets its references, so the
        count reaching 0 here does not mean the block is garbage: its new
        holders may not have fetched it yet.
        """
        if self.should_hold(block_id) or not self.refcounts.is_deletable(block_id):
            return True
        if not await self.in_thread(self.store.contains, block_id):
            return True
        try:
            await self.hand_to_holders(block_id, needing_only=True)
        except Exception as error:
            log.info("block %s kept: its holders may need it (%s)", block_id.hex(), error)
            return False
        return True

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


def _failed(nodes: list[bytes], results: list) -> str:
    """The (short) ids of the nodes whose call raised, comma-separated; "" if none did."""
    return ", ".join(
        n.hex()[:16] for n, r in zip(nodes, results, strict=True) if isinstance(r, BaseException)
    )
