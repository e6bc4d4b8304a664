"""This node's copy of the layout history: persisted, changed, and gossiped.

Every node holds the whole history and merges what its peers send. A local
change (staging, applying, reverting, this node's own progress through a
layout change) is written to disk and pushed to the connected peers at once;
a periodic exchange repairs whatever a push missed.

It also tells the tables which versions to write to and which one to read
from (a `LayoutView`), and takes their reports: writes in flight (the ack
lock), the S3 worker processes' writes in flight and read versions, and
completed sync passes (see progress.py for the rules).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from granary.layout import progress
from granary.layout.history import LayoutConflict, LayoutHistory
from granary.layout.quorums import ConsistencyMode, quorums
from granary.layout.view import LayoutView, ProcessProgress
from granary.util.files import write_atomic
from granary.util.waits import sleep_until

log = logging.getLogger("granary.layout")

LAYOUT_FILE = "cluster_layout"
SYNC_ENDPOINT = "layout/sync"
HIGH_PRIORITY = 0
LEGACY_HISTORY_FIELDS = 2  # (current, older)


class LayoutManager(LayoutView):
    def __init__(
        self,
        metadata_dir: Path,
        replication_factor: int,
        net,
        *,
        mode: ConsistencyMode = "consistent",
        gossip_interval: float = 10.0,
    ) -> None:
        self.path = metadata_dir / LAYOUT_FILE
        self.net = net
        self.me = net.node_id.hex()
        self.gossip_interval = gossip_interval
        self.single_version = mode != "consistent"
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(LayoutHistory)
        self.conflict: str | None = None
        self._synced: dict[str, int] = {}  # table -> version its last complete pass certified
        self._processes: dict[int, ProcessProgress] = {}  # the node's other processes
        self._push_needed = False
        self._pusher: asyncio.Task | None = None
        loaded = self._load(replication_factor)
        super().__init__(loaded, quorums(replication_factor, mode)[1])
        self._set(self._settle(loaded))
        net.endpoint(SYNC_ENDPOINT, self._on_sync)

    def _load(self, replication_factor: int) -> LayoutHistory:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return LayoutHistory.initial(replication_factor)
        history = self._decoder.decode(raw)
        if history.current.replication_factor != replication_factor:
            raise SystemExit(
                f"replication_factor is {replication_factor} in the config but "
                f"{history.current.replication_factor} in the stored layout; it cannot change"
            )
        if len(msgspec.msgpack.decode(raw)) == LEGACY_HISTORY_FIELDS:
            # Written before layout versions had trackers: the older versions
            # were already replaced, not still being synced.
            history = history.retire_before(history.current.version)
        return history

    def _save(self) -> None:
        write_atomic(self.path, self._encoder.encode(self.history))

    # ---- progress reports from the tables and the node's other processes ------

    def _old_writes_done(self) -> None:
        self._adopt(self.history)

    def report_process(self, process: int, progress: ProcessProgress | None) -> None:
        """Where another process of this node stands (None: it is gone)."""
        if progress is None:
            self._processes.pop(process, None)
        else:
            self._processes[process] = progress
        self._adopt(self.history)

    def expect_sync(self, table: str) -> None:
        """Count `table` among those whose sync passes make up this node's sync."""
        self._synced.setdefault(table, 0)

    def sync_target(self) -> int:
        """The version a sync pass starting now will certify when complete."""
        return progress.sync_target(self.history)

    def report_synced(self, table: str, version: int) -> None:
        """`table` finished a complete sync pass started for `version`."""
        if version > self._synced.get(table, 0):
            self._synced[table] = version
            self._adopt(self.history)

    # ---- changes ---------------------------------------------------------------

    async def update(self, change: Callable[[LayoutHistory], LayoutHistory]) -> LayoutHistory:
        """Apply a local change (stage, apply, revert, skip), persist it and push it."""
        self._adopt(change(self.history))
        await self._push_to_all()
        return self.history

    async def skip_dead_nodes(
        self, version: int, up: Iterable[str], *, allow_missing_data: bool
    ) -> list[str]:
        """Move the trackers of the active versions' nodes that are down to `version`."""
        up = set(up)
        dead = [node for node in self.history.active_nodes() if node not in up]
        await self.update(
            lambda history: progress.skip_dead_nodes(
                history, version, dead, allow_missing_data=allow_missing_data
            )
        )
        return dead

    def _settle(self, history: LayoutHistory) -> LayoutHistory:
        return progress.settle(
            history,
            self.me,
            acked=min(
                [
                    *self._writes,
                    *(process.oldest_write for process in self._processes.values()),
                    history.current.version,
                ]
            ),
            synced=min(self._synced.values(), default=0),
            write_quorum=self.write_quorum,
            single_version=self.single_version,
            others_read=min(
                (process.read_version for process in self._processes.values()), default=None
            ),
        )

    def _adopt(self, history: LayoutHistory) -> bool:
        settled = self._settle(history)
        if settled == self.history:
            return False
        old, old_read = self.history, self._read.version
        self._set(settled)
        self._save()
        if settled.current.version != old.current.version:
            log.info("layout version %d is now current", settled.current.version)
        if self._read.version != old_read:
            log.info("reads now go to layout version %d", self._read.version)
        if settled.min_active != old.min_active:
            log.info("layout versions below %d retired", settled.min_active)
        if settled.trackers != history.trackers or settled.min_active != history.min_active:
            self._push_soon()  # this node's own progress: tell the others
        self._tell_listeners()
        return True

    def merge_remote(self, remote: LayoutHistory) -> bool:
        """Merge a peer's history; a conflict is kept aside and reported, never guessed."""
        try:
            merged = self.history.merge(remote)
        except LayoutConflict as conflict:
            if self.conflict != str(conflict):
                log.error("layout conflict: %s", conflict)
            self.conflict = str(conflict)
            return False
        self.conflict = None
        return self._adopt(merged)

    async def _on_sync(self, from_node: bytes, body: bytes, stream) -> tuple[bytes, None]:
        self.merge_remote(self._decoder.decode(body))
        return self._encoder.encode(self.history), None

    async def sync_with(self, node: bytes) -> None:
        reply, _ = await self.net.call(
            node,
            SYNC_ENDPOINT,
            self._encoder.encode(self.history),
            priority=HIGH_PRIORITY,
            timeout=30,
        )
        self.merge_remote(self._decoder.decode(reply))

    async def _push_to_all(self) -> None:
        peers = [n for n in self.net.connected_peers() if n != self.net.node_id]
        results = await asyncio.gather(*(self.sync_with(n) for n in peers), return_exceptions=True)
        for node, result in zip(peers, results, strict=True):
            if isinstance(result, Exception):
                log.debug("layout push to %s failed: %s", node.hex()[:16], result)

    def _push_soon(self) -> None:
        """Push the history to the peers in the background, again if it changes meanwhile."""
        self._push_needed = True
        if self._pusher is None or self._pusher.done():
            self._pusher = asyncio.ensure_future(self._push_while_needed())

    async def _push_while_needed(self) -> None:
        while self._push_needed:
            self._push_needed = False
            await self._push_to_all()

    async def run_gossip(self, stop: asyncio.Event) -> None:
        """Exchange histories with every connected peer periodically."""
        while not stop.is_set():
            await self._push_to_all()
            await sleep_until(stop, self.gossip_interval)
        if self._pusher is not None:
            self._pusher.cancel()
