"""This node's copy of the layout history: persisted, changed, and gossiped.

Every node holds the whole history and merges what its peers send. A local
change (staging, applying, reverting) is written to disk and pushed to the
connected peers at once; a periodic exchange repairs whatever a push missed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import msgspec

from granary.layout.history import LayoutConflict, LayoutHistory
from granary.util.waits import sleep_until

log = logging.getLogger("granary.layout")

LAYOUT_FILE = "cluster_layout"
SYNC_ENDPOINT = "layout/sync"
HIGH_PRIORITY = 0


class LayoutManager:
    def __init__(
        self, metadata_dir: Path, replication_factor: int, net, *, gossip_interval: float = 10.0
    ) -> None:
        self.path = metadata_dir / LAYOUT_FILE
        self.net = net
        self.gossip_interval = gossip_interval
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(LayoutHistory)
        self.history = self._load(replication_factor)
        self.conflict: str | None = None
        self._listeners: list[Callable[[LayoutHistory], None]] = []
        net.endpoint(SYNC_ENDPOINT, self._on_sync)

    def _load(self, replication_factor: int) -> LayoutHistory:
        try:
            history = self._decoder.decode(self.path.read_bytes())
        except FileNotFoundError:
            return LayoutHistory.initial(replication_factor)
        if history.current.replication_factor != replication_factor:
            raise SystemExit(
                f"replication_factor is {replication_factor} in the config but "
                f"{history.current.replication_factor} in the stored layout; it cannot change"
            )
        return history

    def _save(self) -> None:
        temp = self.path.with_name(self.path.name + ".tmp")
        with open(temp, "wb") as handle:
            handle.write(self._encoder.encode(self.history))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)

    @property
    def current(self):
        return self.history.current

    def on_change(self, listener: Callable[[LayoutHistory], None]) -> None:
        self._listeners.append(listener)

    def storage_nodes(self, partition: int) -> list[bytes]:
        """The nodes holding a partition in the current layout (none before one exists)."""
        assignment = self.current.assignment
        if not assignment.ring:
            return []
        return [bytes.fromhex(node) for node in assignment.nodes_of(partition)]

    def role_nodes(self) -> list[bytes]:
        """Every node with a role, gateways included."""
        return [bytes.fromhex(node) for node in self.current.roles]

    async def update(self, change: Callable[[LayoutHistory], LayoutHistory]) -> LayoutHistory:
        """Apply a local change (stage, apply, revert), persist it and push it."""
        self._adopt(change(self.history))
        await self._push_to_all()
        return self.history

    def _adopt(self, history: LayoutHistory) -> bool:
        if history == self.history:
            return False
        old_version = self.history.current.version
        self.history = history
        self._save()
        if history.current.version != old_version:
            log.info("layout version %d is now current", history.current.version)
        for listener in self._listeners:
            listener(history)
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

    async def run_gossip(self, stop: asyncio.Event) -> None:
        """Exchange histories with every connected peer periodically."""
        while not stop.is_set():
            await self._push_to_all()
            await sleep_until(stop, self.gossip_interval)
