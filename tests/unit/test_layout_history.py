"""Layout versions: staging, apply and its version rule, history merges and conflicts."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from granary.layout.history import (
    RETIRED_VERSIONS_KEPT,
    ClusterLayout,
    LayoutConflict,
    LayoutHistory,
)
from granary.layout.roles import LayoutError, LayoutParameters, NodeRole, StagedChanges
from granary.layout.trackers import TRACKER_NAMES, UpdateTrackers

UNIT = 10**9


def staged_cluster(*roles: tuple[str, str, int | None], now_ms: int = 1_000) -> ClusterLayout:
    layout = ClusterLayout.initial(3)
    for node_id, zone, capacity in roles:
        layout = layout.stage_role(node_id, NodeRole(zone, capacity), now_ms)
    return layout


THREE_ZONES = staged_cluster(("aa", "z1", UNIT), ("bb", "z2", UNIT), ("cc", "z3", UNIT))


def test_apply_commits_the_staged_changes_and_clears_them() -> None:
    v1, report = THREE_ZONES.stage_role("gw", NodeRole("z1", None), 1_000).apply_staged(1)
    assert v1.version == 1
    assert sorted(v1.roles) == ["aa", "bb", "cc", "gw"]
    assert v1.staged_roles == {} and v1.staged_parameters is None
    assert v1.assignment.partition_counts() == {"aa": 256, "bb": 256, "cc": 256}
    assert report.replica_moves == 3 * 256


@pytest.mark.parametrize("version", [0, 2, 7])
def test_apply_needs_the_next_version_number(version: int) -> None:
    with pytest.raises(LayoutError, match="expected version 1"):
        THREE_ZONES.apply_staged(version)


def test_preview_is_what_apply_gives() -> None:
    preview = THREE_ZONES.preview()
    assert preview == THREE_ZONES.apply_staged(1)
    assert preview == THREE_ZONES.preview()


def test_reapplying_without_changes_keeps_the_assignment() -> None:
    v1, _ = THREE_ZONES.stage_role("dd", NodeRole("z1", 2 * UNIT), 1_000).apply_staged(1)
    v2, report = v1.apply_staged(2)
    assert v2.assignment == v1.assignment
    assert (report.partitions_moved, report.replica_moves) == (0, 0)


def test_removing_a_node_and_changing_parameters() -> None:
    v1, _ = THREE_ZONES.stage_role("dd", NodeRole("z1", UNIT), 1_000).apply_staged(1)
    staged = v1.stage_remove("dd", 2_000).stage_parameters(LayoutParameters(2), 2_000)
    assert staged.staged_roles == {"dd": None}
    v2, report = staged.apply_staged(2)
    assert "dd" not in v2.roles
    assert v2.parameters == LayoutParameters(2)
    assert "dd" not in v2.assignment.node_ids
    assert report.zone_redundancy == 2


def test_removing_a_node_without_a_role_is_refused() -> None:
    with pytest.raises(LayoutError, match="no role"):
        THREE_ZONES.stage_remove("zz", 1_000)


def test_revert_drops_the_staged_changes_and_later_ones_still_count() -> None:
    reverted = THREE_ZONES.revert_staged()
    assert reverted.staged_roles == {}
    # A clock behind the reverted changes still stages after them.
    again = reverted.stage_role("aa", NodeRole("z9", UNIT), now_ms=5)
    assert again.staged_roles == {"aa": NodeRole("z9", UNIT)}
    assert again.staging.merge(THREE_ZONES.staging).role_changes() == again.staged_roles


def test_layouts_encode_roles_in_node_order_and_round_trip() -> None:
    v1, _ = THREE_ZONES.apply_staged(1)
    shuffled = msgspec.structs.replace(v1, roles=dict(reversed(v1.roles.items())))
    assert msgspec.msgpack.encode(shuffled) == msgspec.msgpack.encode(v1)
    history = LayoutHistory.initial(3).update(v1).update(v1.stage_role("x", NodeRole("z", 1), 9))
    data = msgspec.msgpack.encode(history)
    assert msgspec.msgpack.decode(data, type=LayoutHistory) == history


# -- history -------------------------------------------------------------------------------------


def build_chain(length: int) -> list[ClusterLayout]:
    """Committed versions 0..length-1 of one cluster, each adding a node."""
    chain = [ClusterLayout.initial(1)]
    layout = chain[0]
    for version in range(1, length):
        layout = layout.stage_role(f"n{version:02d}", NodeRole("z", version * UNIT), version)
        layout, _ = layout.apply_staged(version)
        chain.append(layout)
    return chain


CHAIN = build_chain(10)


def test_a_higher_version_wins_and_the_older_one_is_kept() -> None:
    old, new = LayoutHistory(CHAIN[3]), LayoutHistory(CHAIN[4])
    merged = old.merge(new)
    assert merged.current == CHAIN[4]
    assert merged.older == (CHAIN[3].committed(),)
    assert merged.version(3) == CHAIN[3].committed()
    assert merged.version(2) is None


def test_history_keeps_every_active_version_and_a_bounded_number_of_retired_ones() -> None:
    history = LayoutHistory.initial(1)
    for layout in CHAIN[1:]:
        history = history.update(layout)
    assert history.current == CHAIN[-1]
    assert [v.version for v in history.active()] == list(range(9, -1, -1))
    history = history.retire_before(7)
    assert [v.version for v in history.active()] == [9, 8, 7]
    assert [v.version for v in history.retired()] == list(range(6, 6 - RETIRED_VERSIONS_KEPT, -1))
    assert [v.version for v in history.older] == list(range(8, 6 - RETIRED_VERSIONS_KEPT, -1))
    assert history.retire_before(99).active() == (history.current,)


def test_retired_versions_merge_away_and_trackers_merge_by_maximum() -> None:
    a = LayoutHistory(CHAIN[5], tuple(c.committed() for c in CHAIN[4::-1]))
    a = a.with_trackers(UpdateTrackers(ack={"n01": 5, "n02": 3}))
    b = a.retire_before(4).with_trackers(UpdateTrackers(ack={"n02": 4}, sync={"n01": 5}))
    merged = a.merge(b)
    assert merged.min_active == 4
    assert [v.version for v in merged.active()] == [5, 4]
    assert merged.trackers == UpdateTrackers(ack={"n01": 5, "n02": 4}, sync={"n01": 5})


def test_applying_an_older_staged_change_elsewhere_is_dropped_by_the_merge() -> None:
    base = LayoutHistory(THREE_ZONES)
    v1, _ = THREE_ZONES.apply_staged(1)
    other = base.update(THREE_ZONES.stage_role("late", NodeRole("z1", UNIT), 2_000))
    merged = base.update(v1).merge(other)
    assert merged.current.version == 1
    assert merged.current.staged_roles == {"late": NodeRole("z1", UNIT)}
    early = base.update(THREE_ZONES.stage_role("dd", NodeRole("z1", UNIT), 500))
    assert base.update(v1).merge(early).current.staged_roles == {}


def test_two_layouts_applied_as_the_same_version_conflict() -> None:
    one, _ = THREE_ZONES.apply_staged(1)
    two, _ = THREE_ZONES.stage_role("dd", NodeRole("z2", UNIT), 1_000).apply_staged(1)
    a, b = LayoutHistory.initial(3).update(one), LayoutHistory.initial(3).update(two)
    for left, right in ((a, b), (b, a)):
        with pytest.raises(LayoutConflict, match="version 1") as caught:
            left.merge(right)
        assert caught.value.version == 1
    # Applying a newer version on one side settles it: that side's history wins.
    a2 = a.update(one.apply_staged(2)[0])
    for left, right in ((b, a2), (a2, b)):
        merged = left.merge(right)
        assert merged.current == a2.current
        assert merged.version(1) == one.committed()


def test_same_version_with_different_staging_is_no_conflict() -> None:
    v1, _ = THREE_ZONES.apply_staged(1)
    a = LayoutHistory(v1.stage_role("x", NodeRole("z1", UNIT), 5_000))
    b = LayoutHistory(v1.stage_parameters(LayoutParameters(1), 5_000))
    merged = a.merge(b)
    assert merged.current.staged_roles == {"x": NodeRole("z1", UNIT)}
    assert merged.current.staged_parameters == LayoutParameters(1)


# -- merge laws (hypothesis) ---------------------------------------------------------------------

NODE_IDS = st.sampled_from(["a", "b", "c"])
ROLES = st.one_of(
    st.none(), st.builds(NodeRole, st.sampled_from(["z1", "z2"]), st.sampled_from([None, 1, 2]))
)
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("role"), NODE_IDS, ROLES, st.integers(0, 6)),
        st.tuples(st.just("params"), st.sampled_from([1, 2, "max"]), st.integers(0, 6)),
        st.tuples(st.just("clear")),
    ),
    max_size=6,
)


@st.composite
def stagings(draw: st.DrawFn) -> StagedChanges:
    """Staged changes reached by a few operations with small clashing timestamps."""
    staging = StagedChanges()
    for operation in draw(OPERATIONS):
        if operation[0] == "role":
            staging = staging.stage_role(operation[1], operation[2], operation[3])
        elif operation[0] == "params":
            staging = staging.stage_parameters(LayoutParameters(operation[1]), operation[2])
        else:
            staging = staging.clear()
    return staging


TRACKED_NODES = [f"n{version:02d}" for version in range(1, len(CHAIN))]
VERSION_MAPS = st.dictionaries(st.sampled_from(TRACKED_NODES), st.integers(0, len(CHAIN)))


@st.composite
def histories(draw: st.DrawFn) -> LayoutHistory:
    """A history of the shared CHAIN: some current version, every active one before it,
    up to the kept number of retired ones, and some trackers."""
    current = draw(st.integers(0, len(CHAIN) - 1))
    min_active = draw(st.integers(0, current))
    retired = draw(st.integers(0, min(min_active, RETIRED_VERSIONS_KEPT)))
    staging = draw(stagings())
    trackers = UpdateTrackers(*(draw(VERSION_MAPS) for _ in TRACKER_NAMES))
    return LayoutHistory(
        msgspec.structs.replace(CHAIN[current], staging=staging),
        tuple(CHAIN[v].committed() for v in range(current - 1, min_active - retired - 1, -1)),
        trackers,
        min_active,
    )


@settings(max_examples=200)
@given(stagings(), stagings(), stagings())
def test_staged_changes_merge_like_a_crdt(
    a: StagedChanges, b: StagedChanges, c: StagedChanges
) -> None:
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(a) == a


@settings(max_examples=200)
@given(histories(), histories(), histories())
def test_history_merge_is_commutative_associative_idempotent(
    a: LayoutHistory, b: LayoutHistory, c: LayoutHistory
) -> None:
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(a) == a
    assert a.merge(b).current.version == max(a.current.version, b.current.version)
    assert a.merge(b).min_active == max(a.min_active, b.min_active)
    # Merging never loses an active version nor a tracker's progress.
    merged = a.merge(b)
    assert {v.version for v in merged.active()} == {
        v.version for h in (a, b) for v in (h.current, *h.older) if v.version >= merged.min_active
    }
    for name in TRACKER_NAMES:
        for node in TRACKED_NODES:
            assert merged.trackers.get(name, node) == max(
                a.trackers.get(name, node), b.trackers.get(name, node)
            )
