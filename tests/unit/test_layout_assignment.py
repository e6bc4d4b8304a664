"""The partition assignment: constraints, optimality, stability and determinism.

Optimality is checked against an independent integer program (scipy's HiGHS
MILP) written from the constraints themselves, not from the flow network.
"""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from granary.layout.assignment import (
    PARTITIONS,
    Assignment,
    compute_assignment,
    effective_zone_redundancy,
)
from granary.layout.roles import LayoutError, LayoutParameters, NodeRole

UNIT = 10**9
SLOW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Cluster = tuple[dict[str, NodeRole], int, LayoutParameters]


def zones_of(roles: dict[str, NodeRole]) -> int:
    return len({role.zone for role in roles.values() if not role.is_gateway})


@st.composite
def clusters(draw: st.DrawFn, min_nodes: int = 5, max_nodes: int = 50) -> Cluster:
    """Storage nodes with log-uniform capacities (1 to 100 units) in 1-5 zones, a few gateways."""
    zone_count = draw(st.integers(1, 5))
    roles = {}
    for i in range(draw(st.integers(min_nodes, max_nodes))):
        zone = draw(st.integers(0, zone_count - 1))
        exponent = draw(st.integers(0, 200))
        roles[f"{i:04x}"] = NodeRole(f"zone-{zone}", round(UNIT * 10 ** (exponent / 100)))
    for i in range(draw(st.integers(0, 3))):
        roles[f"g{i:03x}"] = NodeRole(f"zone-{i}", None)
    rf = draw(st.sampled_from([1, 2, 3]))
    redundancy = draw(st.sampled_from(["max", *range(1, min(rf, zones_of(roles)) + 1)]))
    return roles, rf, LayoutParameters(redundancy)


@st.composite
def balanced_clusters(draw: st.DrawFn) -> Cluster:
    """Equal capacities, the same number of nodes in every zone."""
    zone_count = draw(st.integers(1, 5))
    per_zone = draw(st.integers(1, 10))
    rf = draw(st.sampled_from([1, 2, 3]))
    roles = {
        f"n{i:03d}": NodeRole(f"zone-{i % zone_count}", 100 * UNIT)
        for i in range(max(zone_count * per_zone, rf + 1))
    }
    redundancy = draw(st.sampled_from(["max", *range(1, min(rf, zone_count) + 1)]))
    return roles, rf, LayoutParameters(redundancy)


def assert_valid(assignment: Assignment, cluster: Cluster, partitions: int = PARTITIONS) -> None:
    roles, rf, parameters = cluster
    redundancy = effective_zone_redundancy(parameters, rf, zones_of(roles))
    size = assignment.partition_size
    assert size > 0
    assert assignment.partition_count == partitions
    for nodes in assignment.partitions():
        assert len(set(nodes)) == rf
        assert all(not roles[node].is_gateway for node in nodes)
        assert len({roles[node].zone for node in nodes}) >= redundancy
    for node, held in assignment.partition_counts().items():
        assert held <= roles[node].capacity // size


@SLOW
@given(clusters())
def test_every_partition_meets_the_constraints(cluster: Cluster) -> None:
    assignment, report = compute_assignment(*cluster)
    assert_valid(assignment, cluster)
    assert report.usable_capacity == assignment.partition_size * PARTITIONS
    assert report.partitions_moved == PARTITIONS
    assert report.replica_moves == PARTITIONS * cluster[1]
    for usage in report.nodes:
        assert usage.usable_bytes == usage.partitions * assignment.partition_size
        assert 0 <= usage.utilisation <= 1


@SLOW
@given(clusters(max_nodes=25))
def test_reapplying_an_unchanged_cluster_moves_nothing(cluster: Cluster) -> None:
    first, _ = compute_assignment(*cluster)
    again, report = compute_assignment(*cluster, first)
    assert again == first
    assert (report.partitions_moved, report.replica_moves) == (0, 0)


@SLOW
@given(clusters(max_nodes=25))
def test_same_inputs_give_the_same_assignment(cluster: Cluster) -> None:
    roles, rf, parameters = cluster
    shuffled = dict(reversed(roles.items()))
    assert compute_assignment(roles, rf, parameters) == compute_assignment(shuffled, rf, parameters)


@SLOW
@given(balanced_clusters(), st.data())
def test_adding_a_node_moves_about_its_share(cluster: Cluster, data: st.DataObject) -> None:
    """Bound: copies moved <= rf * 256 * c_new / C_total + (number of nodes)."""
    roles, rf, parameters = cluster
    before, _ = compute_assignment(*cluster)
    zone = data.draw(st.sampled_from(sorted({role.zone for role in roles.values()})))
    grown = {**roles, "new": NodeRole(zone, 100 * UNIT)}
    after, report = compute_assignment(grown, rf, parameters, before)
    assert_valid(after, (grown, rf, parameters))
    share = rf * PARTITIONS * 100 * UNIT / sum(role.capacity for role in grown.values())
    assert after.partition_counts()["new"] <= report.replica_moves <= share + len(grown)


@SLOW
@given(balanced_clusters(), st.data())
def test_removing_a_node_moves_mostly_its_partitions(cluster: Cluster, data: st.DataObject) -> None:
    """Bound: held <= copies moved <= 1.5 * held + rf, where held = copies on the removed node.

    The slack is real, not an artefact: at the optimal partition size the
    survivors have little free room, and re-homing the removed copies on nodes
    that do not already hold those partitions can force a few other swaps
    (the integer-program test below confirms the move counts are minimal).
    """
    roles, rf, parameters = cluster
    before, _ = compute_assignment(*cluster)
    victim = data.draw(st.sampled_from(sorted(roles)))
    shrunk = {node: role for node, role in roles.items() if node != victim}
    wanted = parameters.zone_redundancy
    if len(shrunk) < rf or (wanted != "max" and wanted > zones_of(shrunk)):
        return
    after, report = compute_assignment(shrunk, rf, parameters, before)
    assert_valid(after, (shrunk, rf, parameters))
    held = before.partition_counts()[victim]
    assert held <= report.replica_moves <= 1.5 * held + rf
    assert held <= report.partitions_moved <= report.replica_moves


# -- optimality against an independent integer program ----------------------------------------


def solve_milp(
    roles: dict[str, NodeRole],
    rf: int,
    redundancy: int,
    partitions: int,
    size: int,
    previous: Assignment | None = None,
) -> int | None:
    """The fewest new (partition, node) pairs of any valid assignment at `size`, None if none.

    Variables x[p, n] (node n holds partition p) and y[p, z] (partition p has a copy in zone z).
    """
    np = pytest.importorskip("numpy")
    optimize = pytest.importorskip("scipy.optimize")
    nodes = sorted(node for node, role in roles.items() if not role.is_gateway)
    zones = sorted({roles[node].zone for node in nodes})
    n_count, z_count = len(nodes), len(zones)
    x_count = partitions * n_count
    width = x_count + partitions * z_count
    kept = set()
    if previous is not None:
        kept = {(p, node) for p in range(partitions) for node in previous.nodes_of(p)}
    cost = np.zeros(width)
    rows, low, high = [], [], []

    def row(entries: dict[int, float], lo: float, hi: float) -> None:
        vector = np.zeros(width)
        for column, value in entries.items():
            vector[column] = value
        rows.append(vector)
        low.append(lo)
        high.append(hi)

    for p in range(partitions):
        for i, node in enumerate(nodes):
            cost[p * n_count + i] = 0 if (p, node) in kept else 1
        row({p * n_count + i: 1 for i in range(n_count)}, rf, rf)
        row({x_count + p * z_count + z: 1 for z in range(z_count)}, redundancy, math.inf)
        for z, zone in enumerate(zones):
            entries = {x_count + p * z_count + z: 1.0}
            entries.update(
                {p * n_count + i: -1.0 for i, n in enumerate(nodes) if roles[n].zone == zone}
            )
            row(entries, -math.inf, 0)
    for i, node in enumerate(nodes):
        row(
            {p * n_count + i: 1 for p in range(partitions)}, -math.inf, roles[node].capacity // size
        )
    result = optimize.milp(
        cost,
        integrality=np.ones(width),
        bounds=optimize.Bounds(0, 1),
        constraints=optimize.LinearConstraint(np.array(rows), low, high),
    )
    if result.status == 2:
        return None
    assert result.status == 0, result.message
    return round(result.fun)


@st.composite
def tiny_clusters(draw: st.DrawFn) -> tuple[Cluster, int]:
    """3-6 nodes of 1-120 bytes in 1-3 zones, 4-12 partitions: small enough for an exact MILP."""
    zone_count = draw(st.integers(1, 3))
    roles = {
        f"n{i}": NodeRole(f"z{draw(st.integers(0, zone_count - 1))}", draw(st.integers(1, 120)))
        for i in range(draw(st.integers(3, 6)))
    }
    rf = draw(st.integers(1, 3))
    redundancy = draw(st.integers(1, min(rf, zones_of(roles))))
    return (roles, rf, LayoutParameters(redundancy)), draw(st.sampled_from([4, 8, 12]))


@settings(max_examples=40, deadline=None)
@given(tiny_clusters(), st.data())
def test_partition_size_and_moves_are_optimal(
    tiny: tuple[Cluster, int], data: st.DataObject
) -> None:
    """Exact: the size S found is feasible and S + 1 is not; the copies moved are the fewest."""
    (roles, rf, parameters), partitions = tiny
    redundancy = parameters.zone_redundancy
    assert isinstance(redundancy, int)
    try:
        first, _ = compute_assignment(roles, rf, parameters, partitions=partitions)
    except LayoutError:
        assert solve_milp(roles, rf, redundancy, partitions, size=1) is None
        return
    size = first.partition_size
    assert_valid(first, (roles, rf, parameters), partitions)
    assert solve_milp(roles, rf, redundancy, partitions, size) is not None
    assert solve_milp(roles, rf, redundancy, partitions, size + 1) is None

    # Change one node's capacity, then compare the moves with the fewest possible.
    node = data.draw(st.sampled_from(sorted(roles)))
    changed = {**roles, node: NodeRole(roles[node].zone, data.draw(st.integers(1, 120)))}
    try:
        second, report = compute_assignment(changed, rf, parameters, first, partitions=partitions)
    except LayoutError:
        return
    assert_valid(second, (changed, rf, parameters), partitions)
    fewest = solve_milp(changed, rf, redundancy, partitions, second.partition_size, first)
    assert report.replica_moves == fewest


# -- errors and small cases ---------------------------------------------------------------------


def nodes(*zones_and_capacities: tuple[str, int | None]) -> dict[str, NodeRole]:
    return {f"n{i}": NodeRole(zone, cap) for i, (zone, cap) in enumerate(zones_and_capacities)}


@pytest.mark.parametrize(
    ("roles", "rf", "redundancy", "message"),
    [
        (nodes(("a", UNIT), ("b", UNIT), ("c", None)), 3, "max", "2 storage nodes"),
        (nodes(("a", UNIT), ("a", UNIT), ("b", UNIT)), 3, 3, "needs storage nodes in 3 zones"),
        (nodes(("a", UNIT), ("b", UNIT), ("c", UNIT)), 2, 3, "exceeds the replication factor"),
        (nodes(("a", 0), ("b", 0), ("c", 0)), 3, "max", "total capacity is zero"),
        (nodes(("a", 100), ("b", 100), ("c", 100)), 3, "max", "cannot hold 256 partitions"),
        (nodes(("a", UNIT)), 0, "max", "at least 1"),
    ],
)
def test_impossible_layouts_are_refused(
    roles: dict[str, NodeRole], rf: int, redundancy: int | str, message: str
) -> None:
    with pytest.raises(LayoutError, match=message):
        compute_assignment(roles, rf, LayoutParameters(redundancy))  # type: ignore[arg-type]


def test_three_equal_nodes_in_three_zones_each_hold_everything() -> None:
    roles = nodes(("a", 3 * UNIT), ("b", 3 * UNIT), ("c", 3 * UNIT), ("d", None))
    assignment, report = compute_assignment(roles, 3, LayoutParameters())
    assert assignment.partition_size == 3 * UNIT // PARTITIONS
    assert assignment.partition_counts() == {"n0": 256, "n1": 256, "n2": 256}
    assert report.usable_capacity == assignment.partition_size * PARTITIONS
    assert "Usable capacity" in report.render()


def test_zone_redundancy_caps_what_a_crowded_zone_can_use() -> None:
    """With rf 3 over 3 zones, every zone holds exactly one copy: the big zone's surplus is idle."""
    roles = nodes(("a", UNIT), ("b", UNIT), ("c", UNIT), ("c", UNIT), ("c", UNIT))
    assignment, _ = compute_assignment(roles, 3, LayoutParameters())
    counts = assignment.partition_counts()
    assert counts["n0"] == counts["n1"] == 256
    assert counts["n2"] + counts["n3"] + counts["n4"] == 256
    relaxed, _ = compute_assignment(roles, 3, LayoutParameters(1))
    assert relaxed.partition_size > assignment.partition_size


def test_an_assignment_round_trips_through_msgpack() -> None:
    assignment, _ = compute_assignment(nodes(("a", UNIT), ("b", 2 * UNIT)), 1, LayoutParameters())
    data = msgspec.msgpack.encode(assignment)
    assert msgspec.msgpack.decode(data, type=Assignment) == assignment
    assert len(assignment.ring) == PARTITIONS
