"""How many nodes a read or a write must reach, per consistency mode.

In `consistent` mode R + W > N, so every read quorum meets every write quorum
of the same node set: read-after-write. `degraded` and `dangerous` give that
up for availability.
"""

from __future__ import annotations

import math
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


def majority(nodes: int) -> int:
    """The quorum of full-copy tables, for reads and writes alike."""
    return nodes // 2 + 1
