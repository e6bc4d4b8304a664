"""How a layout change progresses, computed from a history alone. Pure.

While several versions are active, every write goes to each active version's
nodes with a write quorum in each (so a write is never missed by a version
someone may read), and every read goes to the nodes of one version, the
*read version*, chosen so that it holds every completed write:

1. A node acks version v once every write it started without v's nodes has
   finished. When every node of the active versions has acked v (the *sync
   target* reaches v), every write still running includes v's nodes.
2. A node then syncs: for each partition it holds in any active version, it
   exchanges rows with a write quorum of each active version's holders. A
   write completed before step 1 sits on a write quorum of some active
   version, which meets that quorum, so the node now has the write. It
   reports sync = v.
3. A partition may be read from v once a write quorum of its v-holders have
   sync >= v: any read quorum of them meets one of those. The cluster's read
   version is the highest such version common to every partition (and to the
   full-copy tables, held by every node with a role), else the oldest active one.
4. A node reading from v or newer records sync_ack = v; once every node reads
   past the oldest active version, it retires (`LayoutHistory.retire_unread`).

Trackers travel inside the history and only grow, so whatever a node derives
from them stays true on every node that merges them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

from granary.layout.assignment import PARTITIONS
from granary.layout.history import ClusterLayout, LayoutHistory
from granary.layout.quorums import majority
from granary.layout.roles import LayoutError
from granary.layout.trackers import TrackerName


def sharded_nodes(layout: ClusterLayout, partition: int) -> tuple[str, ...]:
    """The nodes holding a partition of the sharded tables and the blocks."""
    if not layout.assignment.ring:
        return ()
    return layout.assignment.nodes_of(partition)


def full_copy_nodes(layout: ClusterLayout) -> tuple[str, ...]:
    """The nodes holding the full-copy tables: every node with a role."""
    return tuple(layout.roles)


def read_version(history: LayoutHistory, write_quorum: int) -> int:
    """The version reads go to: see step 3 of the module docstring."""
    active = history.active()
    oldest = active[-1].version
    if len(active) == 1:
        return oldest
    trackers = history.trackers

    def readable(nodes_in: Callable[[ClusterLayout], tuple[str, ...]], full_copy: bool) -> int:
        """The newest version whose holders (`nodes_in` it) have synced it at a write quorum."""
        for layout in active[:-1]:
            nodes = nodes_in(layout)
            quorum = majority(len(nodes)) if full_copy else min(write_quorum, len(nodes))
            if nodes and trackers.count_at_least("sync", nodes, layout.version) >= quorum:
                return layout.version
        return oldest

    version = readable(full_copy_nodes, full_copy=True)
    for partition in range(PARTITIONS):
        if version == oldest:
            break
        version = min(
            version,
            readable(partial(sharded_nodes, partition=partition), full_copy=False),
        )
    return version


def sync_target(history: LayoutHistory) -> int:
    """The version a sync pass started now certifies: the newest one every node has acked."""
    acked = history.trackers.min_among("ack", history.active_nodes(), history.current.version)
    return min(acked, history.current.version)


def settle(
    history: LayoutHistory,
    node: str,
    *,
    acked: int,
    synced: int,
    write_quorum: int,
    single_version: bool = False,
    others_read: int | None = None,
) -> LayoutHistory:
    """`history` with this node's trackers raised to what it has done, and the
    versions nobody reads any more retired.

    `acked`: the oldest version under which one of this node's writes still
    runs (the current version when none does). `synced`: the version its
    last complete sync pass of every table certified. `single_version`: the
    degraded and dangerous modes, which give up read-after-write and keep
    only the current version. `others_read`: the oldest version the node's
    other processes still read from (they follow this history with a delay),
    which caps its sync_ack.
    """
    if single_version:
        return history.retire_before(history.current.version)
    while True:
        before = history
        if node in history.active_nodes():
            trackers = (
                history.trackers.raised("ack", [node], min(acked, history.current.version))
                .raised("sync", [node], min(synced, history.current.version))
                .raised("sync_ack", [node], _reading(history, write_quorum, others_read))
            )
            history = history.with_trackers(trackers)
        history = history.retire_unread()
        if history == before:
            return history


def _reading(history: LayoutHistory, write_quorum: int, others_read: int | None) -> int:
    """The oldest version a process of this node reads from."""
    version = read_version(history, write_quorum)
    return version if others_read is None else min(version, others_read)


def skip_dead_nodes(
    history: LayoutHistory, version: int, dead: Iterable[str], *, allow_missing_data: bool
) -> LayoutHistory:
    """Count nodes that are gone for good as done with `version`.

    Their acks and sync_acks move to `version`, so syncs can start and old
    versions retire without them. Their syncs move too only with
    `allow_missing_data`: reads may then go to a version whose live holders
    never received some writes.
    """
    if not history.min_active < version <= history.current.version:
        raise LayoutError(
            f"the version must be above {history.min_active} (the oldest active one) "
            f"and at most {history.current.version} (the current one)"
        )
    dead = [node for node in dead if node in history.active_nodes()]
    if not dead:
        raise LayoutError("no node of the active layout versions is down")
    names: tuple[TrackerName, ...] = ("ack", "sync_ack")
    if allow_missing_data:
        names += ("sync",)
    trackers = history.trackers
    for name in names:
        trackers = trackers.raised(name, dead, version)
    return history.with_trackers(trackers)
