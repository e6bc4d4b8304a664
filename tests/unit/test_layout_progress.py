"""Layout changes without losing read-after-write: trackers, read version, write sets."""

from __future__ import annotations

import asyncio
import itertools
from contextlib import nullcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from granary.layout import progress
from granary.layout.history import ClusterLayout, LayoutHistory
from granary.layout.roles import LayoutError, NodeRole
from granary.layout.trackers import TRACKER_NAMES, UpdateTrackers
from granary.table.quorum import QuorumError
from granary.table.replication import FullReplication, ShardedReplication, call_write_sets

UNIT = 10**9
W = 2  # write quorum for RF 3, consistent mode

# -- trackers ------------------------------------------------------------------------------------

VERSION_MAPS = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 5))
TRACKERS = st.builds(UpdateTrackers, VERSION_MAPS, VERSION_MAPS, VERSION_MAPS)


@settings(max_examples=300)
@given(TRACKERS, TRACKERS, TRACKERS)
def test_trackers_merge_like_a_crdt(a: UpdateTrackers, b: UpdateTrackers, c: UpdateTrackers):
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(a) == a
    for name in TRACKER_NAMES:
        for node in "abcd":
            assert a.merge(b).get(name, node) == max(a.get(name, node), b.get(name, node))


@given(TRACKERS, st.sampled_from(TRACKER_NAMES), st.integers(0, 7))
def test_raising_a_tracker_never_lowers_it(t: UpdateTrackers, name, version: int) -> None:
    raised = t.raised(name, ["a", "d"], version)
    assert raised.get(name, "a") == max(t.get(name, "a"), version)
    assert raised.merge(t) == raised
    assert raised.raised(name, ["a", "d"], version) == raised


# -- a layout change on a small synthetic cluster ------------------------------------------------


def three_zones() -> ClusterLayout:
    layout = ClusterLayout.initial(3)
    for node, zone in (("aa", "z1"), ("bb", "z2"), ("cc", "z3")):
        layout = layout.stage_role(node, NodeRole(zone, UNIT), 1)
    return layout.apply_staged(1)[0]


V1 = three_zones()
# dd joins in a fourth zone: it takes a quarter of the partition copies.
V2 = V1.stage_role("dd", NodeRole("z4", UNIT), 2).apply_staged(2)[0]
# aa leaves: every partition is on bb, cc and dd.
V3 = V2.stage_remove("aa", 3).apply_staged(3)[0]


def settled(history: LayoutHistory, nodes, *, acked: int, synced: int) -> LayoutHistory:
    """`nodes` report their progress over one shared view until nothing changes."""
    while True:
        before = history
        for node in nodes:
            history = progress.settle(history, node, acked=acked, synced=synced, write_quorum=W)
        if history == before:
            return history


def stable_v1() -> LayoutHistory:
    return settled(LayoutHistory.initial(3).update(V1), ["aa", "bb", "cc"], acked=1, synced=1)


def test_a_version_without_roles_retires_at_once() -> None:
    history = stable_v1()
    assert [v.version for v in history.active()] == [1]
    assert history.retired()[0].version == 0
    assert progress.read_version(history, W) == 1


def test_the_sync_target_waits_for_every_node_to_ack() -> None:
    history = stable_v1().update(V2)
    assert progress.sync_target(history) < 2  # nobody acked version 2 yet
    history = settled(history, ["aa", "cc", "dd"], acked=2, synced=1)
    # A write bb started under version 1 is still running: bb holds its ack back.
    history = settled(history, ["bb"], acked=1, synced=1)
    assert progress.sync_target(history) == 1
    history = settled(history, ["bb"], acked=2, synced=1)
    assert progress.sync_target(history) == 2


def test_reads_move_once_a_write_quorum_of_every_partition_and_a_majority_synced() -> None:
    history = settled(stable_v1().update(V2), ["aa", "bb", "cc", "dd"], acked=2, synced=0)
    assert progress.read_version(history, W) == 1
    # bb and cc are two of every partition's three holders, but only two of the
    # four nodes holding the full-copy tables.
    history = settled(history, ["bb", "cc"], acked=2, synced=2)
    assert progress.read_version(history, W) == 1
    history = settled(history, ["dd"], acked=2, synced=2)
    assert progress.read_version(history, W) == 2


def test_reads_wait_for_every_partition() -> None:
    # With a write quorum of 3, a partition is readable once all its holders synced.
    history = settled(stable_v1().update(V2), ["aa", "bb", "cc", "dd"], acked=2, synced=0)
    history = settled(history, ["aa", "bb", "cc"], acked=2, synced=2)
    # The full-copy tables (3 of 4) and aa's partitions could move; dd's cannot.
    assert progress.read_version(history, 3) == 1
    history = settled(history, ["dd"], acked=2, synced=2)
    assert progress.read_version(history, 3) == 2


def test_the_old_version_retires_once_every_node_reads_the_new_one() -> None:
    history = settled(stable_v1().update(V2), ["aa", "bb", "cc", "dd"], acked=2, synced=0)
    history = settled(history, ["bb", "cc", "dd"], acked=2, synced=2)
    assert progress.read_version(history, W) == 2
    assert history.trackers.get("sync_ack", "aa") == 1
    assert [v.version for v in history.active()] == [2, 1]  # aa may still read version 1
    history = settled(history, ["aa"], acked=2, synced=0)
    assert [v.version for v in history.active()] == [2]
    assert [v.version for v in history.older] == [1, 0]


def test_removing_a_node_keeps_it_in_the_active_nodes_until_its_version_retires() -> None:
    history = settled(stable_v1().update(V2), ["aa", "bb", "cc", "dd"], acked=2, synced=2)
    history = history.update(V3)
    assert "aa" in history.active_nodes()
    history = settled(history, ["bb", "cc", "dd"], acked=3, synced=3)
    assert progress.read_version(history, W) == 3
    assert [v.version for v in history.active()] == [3, 2]  # aa still reads version 2
    history = settled(history, ["aa"], acked=3, synced=0)
    history = settled(history, ["bb"], acked=3, synced=3)
    assert [v.version for v in history.active()] == [3]
    assert "aa" not in history.active_nodes()


def test_single_version_modes_keep_only_the_current_version() -> None:
    history = stable_v1().update(V2)
    single = progress.settle(history, "aa", acked=1, synced=0, write_quorum=1, single_version=True)
    assert [v.version for v in single.active()] == [2]
    assert progress.read_version(single, 1) == 2


def test_skipping_dead_nodes() -> None:
    history = settled(stable_v1().update(V2), ["bb", "cc", "dd"], acked=2, synced=2)
    assert progress.sync_target(history) == 1  # aa is down and never acked
    skipped = progress.skip_dead_nodes(history, 2, ["aa"], allow_missing_data=False)
    assert progress.sync_target(skipped) == 2
    assert skipped.trackers.get("sync", "aa") == 1
    assert [v.version for v in settled(skipped, ["bb"], acked=2, synced=2).active()] == [2]
    forced = progress.skip_dead_nodes(history, 2, ["aa"], allow_missing_data=True)
    assert forced.trackers.get("sync", "aa") == 2
    with pytest.raises(LayoutError, match="at most 2"):
        progress.skip_dead_nodes(history, 3, ["aa"], allow_missing_data=False)
    with pytest.raises(LayoutError, match="no node"):
        progress.skip_dead_nodes(history, 2, ["zz"], allow_missing_data=False)


@settings(max_examples=50, deadline=None)
@given(st.permutations(["aa", "bb", "cc", "dd"]), st.data())
def test_the_read_version_never_goes_back_whatever_the_order(order, data) -> None:
    """Nodes ack, sync and merge each other's histories in any order: the read
    version never decreases, no node still reads a version retired anywhere, and
    the change always ends with one active version."""
    views = {node: stable_v1().update(V2) for node in order}
    done = {node: 0 for node in order}
    reads = {node: 1 for node in order}
    for _ in range(40):
        node = data.draw(st.sampled_from(order))
        other = data.draw(st.sampled_from(order))
        view = views[node].merge(views[other])
        if progress.sync_target(view) == 2:
            done[node] = 2
        view = progress.settle(view, node, acked=2, synced=done[node], write_quorum=W)
        views[node] = view
        assert progress.read_version(view, W) >= reads[node]
        reads[node] = progress.read_version(view, W)
        if any(v.min_active == 2 for v in views.values()):
            assert min(reads.values()) == 2
    for _ in range(3):
        for node, other in itertools.product(order, order):
            view = views[node].merge(views[other])
            if progress.sync_target(view) == 2:
                done[node] = 2
            views[node] = progress.settle(view, node, acked=2, synced=done[node], write_quorum=W)
    assert all([v.version for v in view.active()] == [2] for view in views.values())


# -- write sets and read nodes -------------------------------------------------------------------


class Versions:
    """A LayoutSource over a fixed history."""

    def __init__(self, history: LayoutHistory) -> None:
        self.history = history

    @property
    def current(self) -> ClusterLayout:
        return self.history.current

    def write_layouts(self):
        return self.history.active()

    def read_layout(self) -> ClusterLayout:
        return self.history.version(progress.read_version(self.history, W))

    def write_guard(self):
        return nullcontext()


def ids(*names: str) -> set[bytes]:
    return {bytes.fromhex(name) for name in names}


def test_write_sets_cover_every_active_version_and_reads_one() -> None:
    history = settled(stable_v1().update(V2), ["aa", "bb", "cc", "dd"], acked=2, synced=0)
    sharded = ShardedReplication(Versions(history), 3, "consistent")
    moved = next(p for p in range(256) if "aa" not in V2.assignment.nodes_of(p))
    kept = next(p for p in range(256) if "dd" not in V2.assignment.nodes_of(p))
    assert [set(s) for s in sharded.write_sets(moved)] == [
        ids("dd", "bb", "cc"),
        ids("aa", "bb", "cc"),
    ]
    assert [set(s) for s in sharded.write_sets(kept)] == [ids("aa", "bb", "cc")]
    assert set(sharded.read_nodes(moved)) == ids("aa", "bb", "cc")
    assert set(sharded.storage_nodes(moved)) == ids("dd", "bb", "cc")
    full = FullReplication(Versions(history))
    assert [set(s) for s in full.write_sets(0)] == [
        ids("aa", "bb", "cc", "dd"),
        ids("aa", "bb", "cc"),
    ]
    assert [full.write_quorum(len(s)) for s in full.write_sets(0)] == [3, 2]
    synced = settled(history, ["aa", "bb", "cc", "dd"], acked=2, synced=2)
    assert set(ShardedReplication(Versions(synced), 3, "consistent").read_nodes(moved)) == ids(
        "dd", "bb", "cc"
    )


def run_write(sets: list[list[bytes]], failing: set[bytes]) -> list[bytes]:
    called: list[bytes] = []

    async def call(node: bytes) -> None:
        called.append(node)
        await asyncio.sleep(0)
        if node in failing:
            raise OSError("down")

    asyncio.run(call_write_sets(sets, call, lambda n: min(2, n)))
    return called


def test_a_write_needs_a_quorum_in_every_set() -> None:
    a, b, c, d = (bytes([n]) for n in range(4))
    assert sorted(run_write([[d, b, c], [a, b, c]], failing={a, d})) == [a, b, c, d]
    with pytest.raises(QuorumError):
        run_write([[d, b, c], [a, b, c]], failing={b, d})  # {a, b, c} has only a and c
    with pytest.raises(QuorumError):
        run_write([[d, b, c], [a, b, c]], failing={b, c})
    with pytest.raises(QuorumError):
        run_write([], failing=set())
