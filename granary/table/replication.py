"""Which nodes hold a table partition, and the quorums to use.

In this release a cluster has one node; the table code already reads and
writes through these quorums so a multi-node layout only has to supply
larger node sets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

ConsistencyMode = Literal["consistent", "degraded", "dangerous"]


def quorums(replication_factor: int, mode: ConsistencyMode) -> tuple[int, int]:
    """(read quorum, write quorum) for a replication factor and consistency mode."""
    read = math.ceil(replication_factor / 2)
    write = replication_factor + 1 - read
    if mode == "degraded":
        read = 1
    elif mode == "dangerous":
        read = write = 1
    return read, write


@dataclass(frozen=True)
class Replication:
    """The storage nodes of each partition and the quorums over them."""

    nodes: tuple[bytes, ...]
    replication_factor: int
    mode: ConsistencyMode = "consistent"

    def storage_nodes(self, partition: int) -> list[bytes]:
        count = min(self.replication_factor, len(self.nodes))
        start = partition % len(self.nodes)
        return [self.nodes[(start + i) % len(self.nodes)] for i in range(count)]

    @property
    def read_quorum(self) -> int:
        return min(quorums(self.replication_factor, self.mode)[0], len(self.nodes))

    @property
    def write_quorum(self) -> int:
        return min(quorums(self.replication_factor, self.mode)[1], len(self.nodes))
