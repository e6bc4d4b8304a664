"""Which nodes hold a table partition, and the quorums to use over them.

Sharded tables (objects, versions, ...) and blocks live on the
`replication_factor` nodes the layout assigns to each partition. Full-copy
tables (buckets, keys, aliases) live on every node with a role.

While a layout change is under way several layout versions are active: a
table write goes to the nodes of each one and needs a write quorum in each
(`write_sets`, `call_write_sets`); a read goes to the nodes of the single
version the cluster reads from (`read_nodes`). Blocks are written to the
current version only (`storage_nodes`). See granary/layout/progress.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from itertools import chain
from typing import Protocol, TypeVar

from granary.layout.history import ClusterLayout
from granary.layout.progress import full_copy_nodes, sharded_nodes
from granary.layout.quorums import ConsistencyMode, majority, quorums
from granary.table.quorum import QuorumError, call_quorum

T = TypeVar("T")


class LayoutSource(Protocol):
    """The layout versions in use on this node (a LayoutManager)."""

    @property
    def current(self) -> ClusterLayout: ...

    def write_layouts(self) -> tuple[ClusterLayout, ...]: ...

    def read_layout(self) -> ClusterLayout: ...

    def write_guard(self) -> AbstractContextManager[None]: ...


class Replication(Protocol):
    full_copy: bool

    def storage_nodes(self, partition: int) -> list[bytes]: ...

    def write_sets(self, partition: int) -> list[list[bytes]]: ...

    def read_nodes(self, partition: int) -> list[bytes]: ...

    def write_guard(self) -> AbstractContextManager[None]: ...

    def read_quorum(self, nodes: int) -> int: ...

    def write_quorum(self, nodes: int) -> int: ...


def _ids(nodes: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(node) for node in nodes]


class _Placement:
    """A partition's nodes in each layout version in use; `nodes_in` says where."""

    def __init__(self, layout: LayoutSource) -> None:
        self.layout = layout

    def nodes_in(self, layout: ClusterLayout, partition: int) -> tuple[str, ...]:
        raise NotImplementedError

    def storage_nodes(self, partition: int) -> list[bytes]:
        """The partition's nodes in the current layout version."""
        return _ids(self.nodes_in(self.layout.current, partition))

    def write_sets(self, partition: int) -> list[list[bytes]]:
        """The partition's nodes in each active version (distinct, non-empty sets)."""
        sets: list[tuple[str, ...]] = []
        for layout in self.layout.write_layouts():
            nodes = self.nodes_in(layout, partition)
            if nodes and all(set(nodes) != set(known) for known in sets):
                sets.append(nodes)
        return [_ids(nodes) for nodes in sets]

    def read_nodes(self, partition: int) -> list[bytes]:
        """The partition's nodes in the version the cluster reads from."""
        return _ids(self.nodes_in(self.layout.read_layout(), partition))

    def write_guard(self) -> AbstractContextManager[None]:
        return self.layout.write_guard()


class ShardedReplication(_Placement):
    """`replication_factor` nodes per partition, from the layout."""

    full_copy = False

    def __init__(
        self, layout: LayoutSource, replication_factor: int, mode: ConsistencyMode
    ) -> None:
        super().__init__(layout)
        self.replication_factor = replication_factor
        self._read, self._write = quorums(replication_factor, mode)

    def nodes_in(self, layout: ClusterLayout, partition: int) -> tuple[str, ...]:
        return sharded_nodes(layout, partition)

    def read_quorum(self, nodes: int) -> int:
        return min(self._read, nodes) if nodes else self._read

    def write_quorum(self, nodes: int) -> int:
        return min(self._write, nodes) if nodes else self._write


class FullReplication(_Placement):
    """Every node with a role holds every row; reads and writes go to a majority."""

    full_copy = True

    def nodes_in(self, layout: ClusterLayout, partition: int) -> tuple[str, ...]:
        return full_copy_nodes(layout)

    def read_quorum(self, nodes: int) -> int:
        return majority(nodes)

    def write_quorum(self, nodes: int) -> int:
        return majority(nodes)


def distinct_nodes(sets: Iterable[Iterable[bytes]]) -> list[bytes]:
    """Every node of the sets once, in order of first appearance."""
    return list(dict.fromkeys(chain.from_iterable(sets)))


async def call_write_sets(
    sets: Sequence[Sequence[bytes]],
    call: Callable[[bytes], Awaitable[T]],
    quorum: Callable[[int], int],
) -> None:
    """Call every node of every set once, all at once; return when each set has its quorum.

    Raises QuorumError as soon as one set can no longer reach its quorum. The
    calls still running then go on in the background, so every replica
    eventually receives the write.
    """
    if not sets:
        raise QuorumError(1, 0, [])  # no layout yet
    if len(sets) == 1:
        await call_quorum(sets[0], call, quorum(len(sets[0])))
        return
    needs = [(nodes, quorum(len(nodes))) for nodes in sets]
    tasks = {asyncio.ensure_future(call(node)): node for node in distinct_nodes(sets)}
    succeeded: set[bytes] = set()
    failed: set[bytes] = set()
    errors: list[BaseException] = []

    def reached() -> bool:
        return all(len(succeeded.intersection(nodes)) >= need for nodes, need in needs)

    def hopeless() -> bool:
        return any(len(nodes) - len(failed.intersection(nodes)) < need for nodes, need in needs)

    pending = set(tasks)
    while not reached() and not hopeless():
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            error = task.exception()
            if error is None:
                succeeded.add(tasks[task])
            else:
                failed.add(tasks[task])
                errors.append(error)
    for task in pending:
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
    if not reached():
        raise QuorumError(max(need for _, need in needs), len(succeeded), errors)
