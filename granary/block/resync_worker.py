"""The resync workers: take due blocks off the queue and put this node right about them.

For each block `decide` says whether to fetch it (this node should hold it
and lacks it), offload it (this node holds it but should not: hand it to the
holders that lack it, and drop it once every holder has it) or forget it (a
file nothing counts becomes a GC candidate). A failure is recorded with its
backoff. After each block a worker sleeps tranquility x the time the block
took, so that resync leaves room for client traffic; 1-8 workers run at once.
Both are tunable while running.
"""

from __future__ import annotations

import asyncio
import logging

from granary.block import metrics
from granary.block.manager import BlockManager
from granary.block.resync import Action, decide
from granary.net.messages import BACKGROUND
from granary.util.background import WorkerState, WorkerStatus
from granary.util.time import now_ms
from granary.util.waits import sleep_until

log = logging.getLogger("granary.block.resync")

MAX_WORKERS = 8
WALK_BATCH = 1000
IDLE_POLL_SECS = 60.0


class Resyncer:
    def __init__(
        self,
        manager: BlockManager,
        status: WorkerStatus,
        *,
        workers: int = 1,
        tranquility: float = 2.0,
    ) -> None:
        self.manager = manager
        self.queue = manager.resync
        self.status = status
        self.worker_count = workers
        self.tranquility = tranquility
        self.fetched_blocks = 0
        self.fetched_bytes = 0
        self.offloaded_blocks = 0
        self._busy: set[bytes] = set()  # blocks being worked on
        self._active: set[asyncio.Task] = set()

    def set_worker_count(self, count: int) -> None:
        self.worker_count = count
        self.queue.wakeup.set()

    def detail(self) -> dict:
        return {
            "workers": self.worker_count,
            "busy": len(self._active),
            "tranquility": self.tranquility,
            "errors_listed": self.queue.errors.count(),
            # Blocks with a reference count here, those at 0 awaiting the GC included.
            "counted_blocks": self.manager.refcounts.counts.count(),
            "fetched_blocks": self.fetched_blocks,
            "fetched_bytes": self.fetched_bytes,
            "offloaded_blocks": self.offloaded_blocks,
        }

    # ---- the dispatcher ----------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Hand due blocks to at most `worker_count` workers until `stop` is set."""
        try:
            while not stop.is_set():
                self.queue.wakeup.clear()
                self.status.state = WorkerState.RUNNING if self._active else WorkerState.IDLE
                if len(self._active) >= self.worker_count:
                    await sleep_until(stop, IDLE_POLL_SECS, self.queue.wakeup)
                    continue
                entry = self.queue.first_free(self._busy)
                if entry is None:
                    # Nothing queued but the blocks being worked on: a new
                    # entry or a finishing worker sets the wakeup.
                    await sleep_until(stop, IDLE_POLL_SECS, self.queue.wakeup)
                    continue
                wait = (entry.due_ms - now_ms()) / 1000
                if wait > 0:
                    await sleep_until(stop, min(wait, IDLE_POLL_SECS), self.queue.wakeup)
                    continue
                self._busy.add(entry.block_id)
                self.status.state = WorkerState.RUNNING
                task = asyncio.ensure_future(self._work(entry.key, entry.block_id, stop))
                self._active.add(task)
                task.add_done_callback(self._finished)
        finally:
            if self._active:
                await asyncio.wait(self._active)

    def _finished(self, task: asyncio.Task) -> None:
        self._active.discard(task)
        self.queue.wakeup.set()

    async def _work(self, key: bytes, block_id: bytes, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            if not self.queue.postponed(block_id):
                metrics.RESYNCS.inc()
                try:
                    await self.resync_block(block_id)
                except Exception as exc:
                    metrics.RESYNC_ERRORS.inc()
                    log.info("resync of block %s failed: %s", block_id.hex(), exc)
                    self.status.failed(exc)
                    await self.queue.failed(block_id, f"{type(exc).__name__}: {exc}")
                else:
                    await self.queue.succeeded(block_id)
                metrics.RESYNC_DURATION.observe(loop.time() - started)
            await self.queue.done(key)
        finally:
            self._busy.discard(block_id)
        await sleep_until(stop, self.tranquility * (loop.time() - started))

    # ---- one block -----------------------------------------------------------

    async def resync_block(self, block_id: bytes) -> Action:
        manager = self.manager
        present = await manager.in_thread(manager.store.contains, block_id)
        entry = manager.refcounts.entry(block_id)
        action = decide(
            should_hold=manager.should_hold(block_id),
            refcount=None if entry is None else entry[0],
            present=present,
        )
        if action is Action.FETCH:
            data = await manager.get(block_id, priority=BACKGROUND, local=False)
            await manager.put_local(block_id, data)
            self.fetched_blocks += 1
            self.fetched_bytes += len(data)
            metrics.RESYNC_RECEIVED.inc()
        elif action is Action.OFFLOAD:
            await self._offload(block_id)
        elif action is Action.FORGET:
            await manager.db.transact(lambda tx: manager.refcounts.schedule_check(tx, block_id))
        return action

    async def _offload(self, block_id: bytes) -> None:
        """Make sure every holder has the block, then delete the local copy."""
        manager = self.manager
        await manager.hand_to_holders(block_id, needing_only=False)
        async with manager.locks.hold(block_id):
            if not manager.should_hold(block_id) and await manager.in_thread(
                manager.store.delete, block_id
            ):
                self.offloaded_blocks += 1

    # ---- queueing everything -------------------------------------------------

    async def queue_everything(self, due_ms: int | None = None) -> int:
        """Queue every block this node counts or stores (now, or at `due_ms`); return how many.

        Used by `repair blocks` and after a layout change: it cross-checks the
        reference counts against the disk both ways (counted but missing,
        stored but counted nowhere, stored but no longer ours).
        """
        manager = self.manager
        queued = 0
        start: bytes | None = None
        while True:
            batch = []
            for block_id, _ in manager.refcounts.counted(start):
                batch.append(block_id)
                if len(batch) >= WALK_BATCH:
                    break
            queued += await self.queue.push(batch, due_ms)
            if len(batch) < WALK_BATCH:
                break
            start = batch[-1] + b"\x00"
        after: bytes | None = None
        while True:
            stored = await manager.in_thread(manager.store.blocks_after, after, WALK_BATCH)
            uncounted = [b for b in stored if manager.refcounts.entry(b) is None]
            queued += await self.queue.push(uncounted, due_ms)
            if len(stored) < WALK_BATCH:
                break
            after = stored[-1]
        log.info("queued %d blocks for resync", queued)
        return queued
