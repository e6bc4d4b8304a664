"""Scrub: re-read and verify every local block, slowly, in the background.

A pass walks the stored blocks in id order, reads each one and checks it
against its id; a corrupt copy is quarantined by the store and queued for
resync, which fetches it again from a peer. After each block the worker
sleeps tranquility x the time the block took. The state (position, counters,
schedule) is kept in the metadata DB and saved every few seconds, so a
restart resumes the pass where it stopped. A pass starts every 25-35 days,
randomized so that the nodes of a cluster do not all scrub at once, or on
`repair scrub start`; a pause lasts a day unless resumed.
"""

from __future__ import annotations

import asyncio
import logging
import random

import msgspec

from granary.block.codec import CorruptBlock
from granary.block.manager import BlockManager
from granary.util.background import WorkerState, WorkerStatus
from granary.util.time import now_ms
from granary.util.waits import sleep_until

log = logging.getLogger("granary.block.scrub")

DAY_MS = 24 * 3600 * 1000
INTERVAL_DAYS = (25, 35)
PAUSE_MS = DAY_MS
SAVE_EVERY_SECS = 5.0
BATCH = 64
STATE_KEY = b"state"
COMMANDS = ("start", "pause", "resume", "cancel")


class ScrubState(msgspec.Struct):
    running: bool = False
    position: bytes | None = None
    """The last block checked by the running pass."""
    paused_until_ms: int | None = None
    pass_started_ms: int | None = None
    checked: int = 0
    """Blocks checked by the running (or last) pass."""
    last_completed_ms: int | None = None
    next_run_ms: int = 0
    corruptions_detected: int = 0


def next_run_after(now: int) -> int:
    return now + random.randint(INTERVAL_DAYS[0] * DAY_MS, INTERVAL_DAYS[1] * DAY_MS)


class Scrub:
    def __init__(
        self,
        manager: BlockManager,
        status: WorkerStatus,
        *,
        tranquility: float = 4.0,
        enabled: bool = True,
    ) -> None:
        self.manager = manager
        self.status = status
        self.tranquility = tranquility
        self.enabled = enabled
        self.tree = manager.db.tree("block:scrub")
        raw = self.tree.get(STATE_KEY)
        self.state = (
            ScrubState(next_run_ms=next_run_after(now_ms()))
            if raw is None
            else msgspec.msgpack.decode(raw, type=ScrubState)
        )
        self._wakeup = asyncio.Event()

    async def _save(self) -> None:
        raw = msgspec.msgpack.encode(self.state)
        await self.manager.db.transact(lambda tx: tx.put(self.tree, STATE_KEY, raw))

    def detail(self) -> dict:
        state = self.state
        return {
            "running": state.running,
            "checked": state.checked,
            "position": state.position.hex() if state.position else None,
            "paused_until_ms": state.paused_until_ms,
            "last_completed_ms": state.last_completed_ms,
            "next_run_ms": state.next_run_ms,
            "corruptions_detected": state.corruptions_detected,
            "tranquility": self.tranquility,
        }

    async def command(self, name: str) -> dict:
        """start, pause, resume or cancel; returns the resulting state."""
        state = self.state
        now = now_ms()
        if name == "start":
            if not state.running:
                state.running = True
                state.position = None
                state.pass_started_ms = now
                state.checked = 0
            state.paused_until_ms = None
        elif name == "pause":
            state.paused_until_ms = now + PAUSE_MS
        elif name == "resume":
            state.paused_until_ms = None
        elif name == "cancel":
            state.running = False
            state.position = None
            state.paused_until_ms = None
            state.next_run_ms = next_run_after(now)
        else:
            raise ValueError(f"unknown scrub command {name!r}: use {', '.join(COMMANDS)}")
        await self._save()
        self._wakeup.set()
        return self.detail()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wakeup.clear()
            state = self.state
            now = now_ms()
            if state.paused_until_ms is not None and now < state.paused_until_ms:
                self.status.state = WorkerState.PAUSED
                await sleep_until(stop, (state.paused_until_ms - now) / 1000, self._wakeup)
            elif not state.running:
                if self.enabled and now >= state.next_run_ms:
                    await self.command("start")
                    continue
                self.status.state = WorkerState.IDLE
                wait = (state.next_run_ms - now) / 1000 if self.enabled else 3600.0
                await sleep_until(stop, min(max(wait, 0.0), 3600.0), self._wakeup)
            else:
                self.status.state = WorkerState.RUNNING
                await self._scrub_batch(stop)

    async def _scrub_batch(self, stop: asyncio.Event) -> None:
        state = self.state
        manager = self.manager
        loop = asyncio.get_running_loop()
        batch = await manager.in_thread(manager.store.blocks_after, state.position, BATCH)
        if not batch:
            state.running = False
            state.position = None
            state.paused_until_ms = None
            state.last_completed_ms = now_ms()
            state.next_run_ms = next_run_after(state.last_completed_ms)
            await self._save()
            log.info("scrub pass done: %d blocks checked", state.checked)
            return
        saved = loop.time()
        for block_id in batch:
            if stop.is_set() or self._wakeup.is_set():
                break  # a command came in: look at the state again
            started = loop.time()
            await self._check(block_id)
            if not state.running:
                break  # cancelled meanwhile
            state.position = block_id
            state.checked += 1
            if loop.time() - saved >= SAVE_EVERY_SECS:
                await self._save()
                saved = loop.time()
            await sleep_until(stop, self.tranquility * (loop.time() - started), self._wakeup)
        await self._save()

    async def _check(self, block_id: bytes) -> None:
        manager = self.manager
        try:
            await manager.in_thread(manager.store.read, block_id)
        except CorruptBlock as exc:
            log.warning("scrub: block %s is corrupt (%s): quarantined", block_id.hex(), exc)
            self.state.corruptions_detected += 1
            manager.stats.corrupt_copies += 1
            await self._save()
            await manager.resync.push([block_id])
        except OSError as exc:
            log.warning("scrub: block %s could not be read: %s", block_id.hex(), exc)
            self.status.failed(exc)
