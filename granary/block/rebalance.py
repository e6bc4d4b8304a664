"""Rebalance: move every local block into its primary data directory.

Run after adding a data directory, changing capacities or marking one
read-only (which drains it: a read-only directory is never a primary). One
pass at a time, in the background, each block moved under its lock so that
no write or GC deletion of the same block runs meanwhile.
"""

from __future__ import annotations

import asyncio
import logging

from granary.block.manager import BlockManager
from granary.util.background import WorkerState, WorkerStatus
from granary.util.waits import sleep_until

log = logging.getLogger("granary.block.rebalance")

BATCH = 256


class Rebalance:
    def __init__(self, manager: BlockManager, status: WorkerStatus) -> None:
        self.manager = manager
        self.status = status
        self.checked = 0
        self.moved = 0
        self._requested = asyncio.Event()

    def detail(self) -> dict:
        return {"checked": self.checked, "moved": self.moved}

    def request(self) -> bool:
        """Start a pass; False if one is already running (or already requested)."""
        if self._requested.is_set() or self.status.state is WorkerState.RUNNING:
            return False
        self._requested.set()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.status.state = WorkerState.IDLE
            await sleep_until(stop, 3600.0, self._requested)
            if not self._requested.is_set():
                continue
            self._requested.clear()
            self.status.state = WorkerState.RUNNING
            try:
                await self._pass(stop)
            except Exception as exc:
                log.exception("rebalance failed")
                self.status.failed(exc)

    async def _pass(self, stop: asyncio.Event) -> None:
        manager = self.manager
        self.checked = self.moved = 0
        after: bytes | None = None
        while not stop.is_set():
            batch = await manager.in_thread(manager.store.blocks_after, after, BATCH)
            for block_id in batch:
                async with manager.locks.hold(block_id):
                    self.moved += await manager.in_thread(manager.store.relocate, block_id)
                self.checked += 1
            if len(batch) < BATCH:
                break
            after = batch[-1]
        log.info("rebalance done: %d of %d blocks moved", self.moved, self.checked)
