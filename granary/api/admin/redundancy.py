"""Whether the cluster is fully redundant, as far as this node can tell.

After a failure operators ask one question: is every copy back? This node
answers yes (the gauge `granary_fully_redundant` is 1) when all of these hold:

- every partition of the current layout has all its nodes up (not just a
  quorum);
- no layout change is in flight: one active layout version, which every node
  has synced;
- every table's anti-entropy has completed a pass that began after the last
  time a peer came up (so the rows a returning node missed are back);
- this node's block resync has no failed block and no check overdue.

Resync checks that are not due yet do not count: every reference change
queues one 30 s ahead (block/manager.py, REF_CHANGE_DELAY_MS), so counting
them would make a cluster taking writes never fully redundant. The price: for
up to those 30 s after a returning node got its rows back, the blocks they
reference may still be on their way while this says yes.

Every figure is one this node keeps anyway (peer states, layout trackers,
flags of its sync workers, the first key and the size of two trees): nothing
is scanned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from granary.api.admin.cluster_ops import ClusterAdmin
from granary.block.resync import ResyncQueue
from granary.table.sync import TableSync
from granary.util.time import now_ms


class Redundancy:
    """Built before the node connects (to see every peer come up); `cluster` is set
    once the admin side exists."""

    def __init__(self, net, syncs: Sequence[TableSync], resync: ResyncQueue) -> None:
        self.cluster: ClusterAdmin | None = None
        self.syncs = syncs
        self.resync = resync
        self.last_peer_up: float | None = None
        net.add_listener(self._peer_up, lambda node: None)

    def _peer_up(self, node: bytes, address: object) -> None:
        self.last_peer_up = asyncio.get_running_loop().time()

    def missing(self) -> list[str]:
        """What keeps the cluster from being fully redundant (nothing: it is)."""
        if self.cluster is None:
            return ["the node is starting"]
        reasons = []
        health = self.cluster.health()
        if health.partitions == 0:
            reasons.append("no layout")
        elif health.partitions_all_up < health.partitions:
            down = health.partitions - health.partitions_all_up
            reasons.append(f"{down} of {health.partitions} partitions have a node down")
        history = self.cluster.layout.history
        nodes = history.active_nodes()
        version = history.current.version
        if len(history.active()) > 1:
            reasons.append("a layout change is in progress")
        elif history.trackers.count_at_least("sync", nodes, version) < len(nodes):
            reasons.append(f"not every node has synced layout version {version}")
        behind = [sync.table.name for sync in self.syncs if not self._caught_up(sync)]
        if behind:
            reasons.append(f"tables not synced since a node came up: {', '.join(behind)}")
        errors = self.resync.errors.count()
        if errors:
            reasons.append(f"{errors} blocks failed their resync")
        due = self.resync.next_due_ms()
        if due is not None and due <= now_ms():
            reasons.append("block resync checks are overdue")
        return reasons

    def _caught_up(self, sync: TableSync) -> bool:
        started = sync.complete_pass_started
        if started is None:
            return False
        return self.last_peer_up is None or started >= self.last_peer_up

    def fully_redundant(self) -> bool:
        return not self.missing()
