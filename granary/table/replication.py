"""Which nodes hold a table partition, and the quorums to use over them.

Sharded tables (objects, versions, ...) and blocks live on the
`replication_factor` nodes the layout assigns to each partition. Full-copy
tables (buckets, keys, aliases) live on every node with a role.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

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


class NodeSource(Protocol):
    def storage_nodes(self, partition: int) -> list[bytes]: ...

    def role_nodes(self) -> list[bytes]: ...


class Replication(Protocol):
    full_copy: bool

    def storage_nodes(self, partition: int) -> list[bytes]: ...

    def read_quorum(self, nodes: int) -> int: ...

    def write_quorum(self, nodes: int) -> int: ...


class ShardedReplication:
    """`replication_factor` nodes per partition, from the layout."""

    full_copy = False

    def __init__(self, layout: NodeSource, replication_factor: int, mode: ConsistencyMode) -> None:
        self.layout = layout
        self.replication_factor = replication_factor
        self._read, self._write = quorums(replication_factor, mode)

    def storage_nodes(self, partition: int) -> list[bytes]:
        return self.layout.storage_nodes(partition)

    def read_quorum(self, nodes: int) -> int:
        return min(self._read, nodes) if nodes else self._read

    def write_quorum(self, nodes: int) -> int:
        return min(self._write, nodes) if nodes else self._write


class FullReplication:
    """Every node with a role holds every row; reads and writes go to a majority."""

    full_copy = True

    def __init__(self, layout: NodeSource) -> None:
        self.layout = layout

    def storage_nodes(self, partition: int) -> list[bytes]:
        return self.layout.role_nodes()

    def read_quorum(self, nodes: int) -> int:
        return nodes // 2 + 1

    def write_quorum(self, nodes: int) -> int:
        return nodes // 2 + 1
