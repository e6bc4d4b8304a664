"""Cluster health from the layout and which nodes are up. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from granary.layout.history import ClusterLayout


@dataclass(frozen=True)
class Health:
    status: str  # "healthy", "degraded" or "unavailable"
    partitions: int
    partitions_with_quorum: int
    partitions_all_up: int
    storage_nodes: int
    storage_nodes_up: int

    @property
    def serving(self) -> bool:
        return self.status != "unavailable"


def cluster_health(layout: ClusterLayout, up: set[str], write_quorum: int) -> Health:
    """Healthy: every storage node up. Degraded: some down, yet every partition
    keeps a write quorum. Unavailable: some partition lost its quorum (or there
    is no layout yet)."""
    assignment = layout.assignment
    partitions = assignment.partitions() if assignment.ring else []
    with_quorum = sum(sum(n in up for n in nodes) >= write_quorum for nodes in partitions)
    all_up = sum(all(n in up for n in nodes) for nodes in partitions)
    storage = [node for node, role in layout.roles.items() if not role.is_gateway]
    if not partitions or with_quorum < len(partitions):
        status = "unavailable"
    elif all_up < len(partitions):
        status = "degraded"
    else:
        status = "healthy"
    return Health(
        status,
        len(partitions),
        with_quorum,
        all_up,
        len(storage),
        sum(node in up for node in storage),
    )
