"""A real BlockManager over SQLite and a temp folder, with fixed holders and distances,
for the unit tests of block reads and resync (the network is each test's own fake),
and a one-node replication for the model tests built on it."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path

from granary.block.holders import BlockHolders
from granary.block.manager import BlockManager
from granary.block.store import BlockStore, DataDirectory
from granary.db import open_db


class FixedReplication:
    """Every partition held by `nodes`; writes need two of them."""

    def __init__(self, nodes: list[bytes]) -> None:
        self.nodes = nodes

    def storage_nodes(self, partition: int) -> list[bytes]:
        return self.nodes

    def write_quorum(self, nodes: int) -> int:
        return 2


class FixedDistances:
    """Nodes nearest first in the order given; every round trip 1 ms."""

    def __init__(self, order: list[bytes]) -> None:
        self.order = order

    def by_distance(self, nodes):
        return sorted(nodes, key=self.order.index)

    def rtt(self, node):
        return 0.001


@contextmanager
def block_managers(root: Path) -> Iterator:
    """Yields `make(net, holders, distances, local, gc_grace_ms)`; closes what it made."""
    made = []

    def make(net, holders: BlockHolders, distances, local: bytes, gc_grace_ms: int) -> BlockManager:
        db = open_db("sqlite", root / f"meta{len(made)}", fsync=False)
        store = BlockStore(
            [DataDirectory(root / f"data{len(made)}", 1)], fsync=False, compression_level=None
        )
        executor = ThreadPoolExecutor(2)
        made.append((db, executor))
        return BlockManager(
            db,
            store,
            holders,
            local,
            executor,
            net,
            distances,
            gc_grace_ms=gc_grace_ms,
            resync_retry_base_ms=1000,
        )

    try:
        yield make
    finally:
        for db, executor in made:
            executor.shutdown()
            db.close()


class OneNodeReplication:
    """Every partition on `node` alone: write and read quorums of one."""

    full_copy = False

    def __init__(self, node: bytes) -> None:
        self.node = node

    def write_sets(self, partition: int) -> list[list[bytes]]:
        return [[self.node]]

    def read_nodes(self, partition: int) -> list[bytes]:
        return [self.node]

    def write_guard(self) -> nullcontext:
        return nullcontext()

    def read_quorum(self, nodes: int) -> int:
        return 1

    def write_quorum(self, nodes: int) -> int:
        return 1
