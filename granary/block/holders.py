"""Which nodes should hold a block: the current layout's, then older layouts'.

A block lives with its block_ref rows, on the storage nodes of the partition
of its id. Right after a layout change the new holders may not have it yet,
so readers fall back to the nodes of the older layout versions still known.
"""

from __future__ import annotations

from typing import Protocol

from granary.table.keys import partition_hash, partition_of
from granary.table.replication import Replication


class LayoutVersions(Protocol):
    """The part of the layout manager used here: `history.older` layouts."""

    @property
    def history(self): ...


def block_partition(block_id: bytes) -> int:
    return partition_of(partition_hash(block_id))


class BlockHolders:
    def __init__(self, replication: Replication, layout: LayoutVersions | None = None) -> None:
        self.replication = replication
        self.layout = layout

    def current(self, block_id: bytes) -> list[bytes]:
        return self.replication.storage_nodes(block_partition(block_id))

    def older(self, block_id: bytes) -> list[bytes]:
        """Holders in older layout versions (newest first) that hold it no longer."""
        if self.layout is None:
            return []
        partition = block_partition(block_id)
        seen = set(self.current(block_id))
        found: list[bytes] = []
        for layout in self.layout.history.older:
            if not layout.assignment.ring:
                continue
            for hexid in layout.assignment.nodes_of(partition):
                node = bytes.fromhex(hexid)
                if node not in seen:
                    seen.add(node)
                    found.append(node)
        return found
