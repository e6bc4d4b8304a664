"""The block workers that keep this node's copies right, wired together.

Resync (fetch what is missing, offload what is not ours), scrub (find rot
before a reader does) and rebalance (blocks into their primary directory),
registered with the worker registry along with their live variables, and
the operations the admin API exposes. A layout change, and a data directory
found empty at start (a new or wiped disk), queue every block for a check.
"""

from __future__ import annotations

import asyncio
import datetime

from granary.block.manager import BlockManager
from granary.block.rebalance import Rebalance
from granary.block.resync_worker import MAX_WORKERS, Resyncer
from granary.block.scrub import Scrub
from granary.net.hedging import expose_hedging
from granary.util.background import (
    Workers,
    float_setter,
    int_setter,
)
from granary.util.time import now_ms
from granary.util.waits import sleep_until

MAX_TRANQUILITY = 1000.0
AUTOMATIC_WALK_DELAY_MS = 10_000
"""A walk started by a layout change or a new disk checks its blocks this much
later: time to connect to the peers and for table sync to bring the references."""


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat(timespec="seconds")


class BlockHealing:
    def __init__(
        self,
        manager: BlockManager,
        workers: Workers,
        *,
        layout_version: int,
        resync_workers: int = 1,
        resync_tranquility: float = 2.0,
        scrub_tranquility: float = 4.0,
        scrub_enabled: bool = True,
    ) -> None:
        self.manager = manager
        self.workers = workers
        self._layout_version = layout_version
        self._walk_requested = asyncio.Event()
        self._retry_failing = False
        self.resyncer = Resyncer(
            manager,
            workers.add("block-resync", queue_length=manager.resync.length),
            workers=resync_workers,
            tranquility=resync_tranquility,
        )
        self.resyncer.status.detail = self.resyncer.detail
        self.scrub = Scrub(
            manager,
            workers.add("block-scrub"),
            tranquility=scrub_tranquility,
            enabled=scrub_enabled,
        )
        self.scrub.status.detail = self.scrub.detail
        self.rebalance = Rebalance(manager, workers.add("block-rebalance"))
        self.rebalance.status.detail = self.rebalance.detail
        self._variables()
        if manager.store.fresh and next(manager.refcounts.counted(), None) is not None:
            self._walk_requested.set()

    def _variables(self) -> None:
        resyncer, scrub, manager = self.resyncer, self.scrub, self.manager
        workers = self.workers
        workers.variable(
            "resync-worker-count",
            lambda: resyncer.worker_count,
            int_setter(resyncer.set_worker_count, 1, MAX_WORKERS),
            "resync workers running at once",
        )
        workers.variable(
            "resync-tranquility",
            lambda: resyncer.tranquility,
            float_setter(lambda v: setattr(resyncer, "tranquility", v), 0.0, MAX_TRANQUILITY),
            "resync sleeps this many times the time a block took",
        )
        workers.variable(
            "scrub-tranquility",
            lambda: scrub.tranquility,
            float_setter(lambda v: setattr(scrub, "tranquility", v), 0.0, MAX_TRANQUILITY),
            "scrub sleeps this many times the time a block took",
        )
        workers.variable("scrub-last-completed", lambda: _iso(scrub.state.last_completed_ms))
        workers.variable("scrub-next-run", lambda: _iso(scrub.state.next_run_ms))
        workers.variable("scrub-corruptions_detected", lambda: scrub.state.corruptions_detected)
        expose_hedging(workers, "block", manager.hedging)
        workers.variable("block-reads", lambda: manager.stats.reads)
        workers.variable("block-corrupt-copies", lambda: manager.stats.corrupt_copies)

    def start(self, stop: asyncio.Event) -> list[asyncio.Task]:
        spawn = self.workers.spawn
        return [
            spawn("block-resync", self.resyncer.run(stop), status=self.resyncer.status),
            spawn("block-scrub", self.scrub.run(stop), status=self.scrub.status),
            spawn("block-rebalance", self.rebalance.run(stop), status=self.rebalance.status),
            spawn("block-resync-walk", self._walk_when_asked(stop)),
        ]

    async def _walk_when_asked(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await sleep_until(stop, 3600.0, self._walk_requested)
            if self._walk_requested.is_set() and not stop.is_set():
                self._walk_requested.clear()
                due = now_ms() + AUTOMATIC_WALK_DELAY_MS
                await self.resyncer.queue_everything(due)
                if self._retry_failing:
                    self._retry_failing = False
                    await self.resyncer.queue.retry(at_ms=due)

    def layout_changed(self, version: int) -> None:
        """Check every block against a new layout version (fetch or offload).

        Blocks backing off after failures are tried again too: what failed
        (a holder that did not answer, a node that is no holder any more)
        was judged against the older layout.
        """
        if version != self._layout_version:
            self._layout_version = version
            self._retry_failing = True
            self._walk_requested.set()

    async def repair_blocks(self) -> int:
        return await self.resyncer.queue_everything()

    def repair_rebalance(self) -> bool:
        return self.rebalance.request()
