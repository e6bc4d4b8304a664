"""The partition assignment: which storage nodes hold each partition.

The method is the one of the optimal-layout report written for Garage:

1. The partition size S is the largest size such that every partition's
   `replication_factor` copies fit when node n holds at most
   k_n(S) = min(capacity_n // S, partitions) partitions, each copy on a distinct
   node, each partition spanning at least `zone_redundancy` zones. Only sizes
   capacity_n // k can be that optimum, so S is a binary search over them.
2. Among the assignments at S, the one keeping the most (partition, node) pairs
   of the previous assignment: a min-cost flow where a kept pair costs 0 and a
   new pair 1, so it moves the fewest copies.

The flow network, per partition p: source -> first(p) (capacity zr) -> (p, zone)
(capacity 1 for each zone) and source -> extra(p) (capacity rf - zr) -> (p, zone)
(capacity rf - zr); then (p, zone) -> each node of the zone (capacity 1) and
node -> sink (capacity k_n(S)). A flow of value rf * partitions is an
assignment: distinct nodes, at most rf - zr + 1 copies in a zone, and the
"first" copies in zr distinct zones. Conversely every valid assignment is such
a flow, so the network loses no valid assignment.

The binary search does not need the flow: partitions are alike, so when any
flow of value rf * P exists, its average over all permutations of the
partitions is a flow sending the same amounts through every partition; with
K_z the sum of k_n(S) over the nodes of zone z, such a flow exists exactly when
sum_z min(K_z, P * (rf - zr + 1)) >= rf * P and sum_z min(K_z, P) >= zr * P.
Integral capacities make the best fractional and integral flows equal. The
min-cost flow at the chosen S then confirms it.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Mapping

import msgspec

from granary.layout.roles import LayoutError, LayoutParameters, NodeRole

PARTITIONS = 256
MAX_STORAGE_NODES = 256  # a ring entry is one byte


class Assignment(msgspec.Struct, frozen=True, array_like=True):
    """The partitions' nodes, stored compactly.

    Partition p is held by `node_ids[i]` for each byte i of
    `ring[p * replication_factor : (p + 1) * replication_factor]`.
    `partition_size` is the usable bytes per partition (0 before any assignment).
    """

    replication_factor: int
    node_ids: tuple[str, ...] = ()
    ring: bytes = b""
    partition_size: int = 0

    @property
    def partition_count(self) -> int:
        return len(self.ring) // self.replication_factor

    def nodes_of(self, partition: int) -> tuple[str, ...]:
        start = partition * self.replication_factor
        return tuple(self.node_ids[i] for i in self.ring[start : start + self.replication_factor])

    def partitions(self) -> list[tuple[str, ...]]:
        """The nodes of every partition, by partition number."""
        return [self.nodes_of(p) for p in range(self.partition_count)]

    def partition_counts(self) -> dict[str, int]:
        """How many partitions each storage node holds (0 included), by node id."""
        counts = dict.fromkeys(self.node_ids, 0)
        for index in self.ring:
            counts[self.node_ids[index]] += 1
        return counts


class NodeUsage(msgspec.Struct, frozen=True):
    node_id: str
    zone: str
    capacity: int
    partitions: int
    usable_bytes: int
    utilisation: float  # usable_bytes / capacity; 0 for a zero capacity


class LayoutReport(msgspec.Struct, frozen=True):
    """What an assignment gives and what it costs to reach from the previous one."""

    partition_size: int
    usable_capacity: int
    zone_redundancy: int
    nodes: tuple[NodeUsage, ...]
    partitions_moved: int  # partitions whose node set changed
    replica_moves: int  # copies to make on nodes that did not hold them

    def render(self) -> str:
        lines = [
            f"Partition size: {_human(self.partition_size)}",
            f"Usable capacity: {_human(self.usable_capacity)}",
            f"Zone redundancy: {self.zone_redundancy}",
            "",
            f"{'node':<16} {'zone':<12} {'partitions':>10} {'usable':>10} "
            f"{'capacity':>10} {'used':>6}",
        ]
        for node in self.nodes:
            lines.append(
                f"{node.node_id[:16]:<16} {node.zone[:12]:<12} {node.partitions:>10} "
                f"{_human(node.usable_bytes):>10} {_human(node.capacity):>10} "
                f"{node.utilisation:>6.1%}"
            )
        lines += [
            "",
            f"Partitions moved: {self.partitions_moved}; "
            f"partition copies to transfer: {self.replica_moves}",
        ]
        return "\n".join(lines)


def effective_zone_redundancy(
    parameters: LayoutParameters, replication_factor: int, zones: int
) -> int:
    """The number of zones each partition must span, checked against the cluster."""
    wanted = parameters.zone_redundancy
    if wanted == "max":
        return min(replication_factor, zones)
    if wanted > replication_factor:
        raise LayoutError(
            f"zone_redundancy {wanted} exceeds the replication factor {replication_factor}"
        )
    if wanted > zones:
        raise LayoutError(
            f"zone_redundancy {wanted} needs storage nodes in {wanted} zones; "
            f"the layout has {zones}"
        )
    return wanted


def compute_assignment(
    roles: Mapping[str, NodeRole],
    replication_factor: int,
    parameters: LayoutParameters,
    previous: Assignment | None = None,
    *,
    partitions: int = PARTITIONS,
) -> tuple[Assignment, LayoutReport]:
    """The optimal assignment of `partitions` partitions over the storage nodes of `roles`.

    Deterministic: equal inputs give equal outputs. Raises LayoutError when no
    assignment exists.
    """
    if replication_factor < 1:
        raise LayoutError("the replication factor must be at least 1")
    storage = sorted((node_id, role) for node_id, role in roles.items() if not role.is_gateway)
    if len(storage) < replication_factor:
        raise LayoutError(
            f"{len(storage)} storage nodes cannot hold {replication_factor} distinct copies "
            "of each partition; assign roles with a capacity to more nodes"
        )
    if len(storage) > MAX_STORAGE_NODES:
        raise LayoutError(f"at most {MAX_STORAGE_NODES} storage nodes are supported")
    zone_names = sorted({role.zone for _, role in storage})
    zone_redundancy = effective_zone_redundancy(parameters, replication_factor, len(zone_names))
    node_ids = tuple(node_id for node_id, _ in storage)
    capacities = [role.capacity or 0 for _, role in storage]
    zone_of = [zone_names.index(role.zone) for _, role in storage]
    if sum(capacities) == 0:
        raise LayoutError("the storage nodes' total capacity is zero")

    shape = _Shape(partitions, replication_factor, zone_redundancy, len(zone_names))
    size = _optimal_partition_size(shape, capacities, zone_of)
    kept = _pairs(previous, replication_factor, partitions)
    ring = _assign(shape, size, node_ids, capacities, zone_of, zone_names, kept)
    assignment = Assignment(replication_factor, node_ids, bytes(ring), size)
    report = _report(assignment, dict(storage), zone_redundancy, kept)
    return assignment, report


class _Shape(msgspec.Struct, frozen=True):
    """The problem's dimensions, and the feasibility test of the module docstring."""

    partitions: int
    replication_factor: int
    zone_redundancy: int
    zones: int

    def fits(self, loads_by_zone: list[int]) -> bool:
        """Whether zones able to hold these many partitions each can hold every copy."""
        p, rf, zr = self.partitions, self.replication_factor, self.zone_redundancy
        per_zone = p * (rf - zr + 1)
        return (
            sum(min(load, per_zone) for load in loads_by_zone) >= rf * p
            and sum(min(load, p) for load in loads_by_zone) >= zr * p
        )

    def loads_by_zone(self, size: int, capacities: list[int], zone_of: list[int]) -> list[int]:
        loads = [0] * self.zones
        for capacity, zone in zip(capacities, zone_of, strict=True):
            loads[zone] += min(capacity // size, self.partitions)
        return loads


def _optimal_partition_size(shape: _Shape, capacities: list[int], zone_of: list[int]) -> int:
    copies = shape.partitions * shape.replication_factor
    upper = sum(capacities) // copies  # no size above can hold every copy
    candidates = sorted(
        {c // k for c in capacities for k in range(1, shape.partitions + 1) if 1 <= c // k <= upper}
    )
    if not candidates or not shape.fits(shape.loads_by_zone(candidates[0], capacities, zone_of)):
        raise LayoutError(
            f"the storage nodes cannot hold {shape.partitions} partitions x "
            f"{shape.replication_factor} copies on distinct nodes spanning "
            f"{shape.zone_redundancy} zones: add capacity, nodes or zones, "
            "or lower zone_redundancy"
        )
    low, high = 0, len(candidates) - 1  # candidates[low] fits
    while low < high:
        middle = (low + high + 1) // 2
        if shape.fits(shape.loads_by_zone(candidates[middle], capacities, zone_of)):
            low = middle
        else:
            high = middle - 1
    return candidates[low]


def _pairs(
    previous: Assignment | None, replication_factor: int, partitions: int
) -> set[tuple[int, str]]:
    """The (partition, node) pairs of a previous assignment comparable with the new one."""
    if (
        previous is None
        or previous.replication_factor != replication_factor
        or previous.partition_count != partitions
    ):
        return set()
    return {(p, node_id) for p in range(partitions) for node_id in previous.nodes_of(p)}


def _spread_key(partition: int, name: str) -> bytes:
    """A fixed pseudo-random order, different for each partition, so that no two
    nodes share many partitions just because their names sort next to each other."""
    return hashlib.blake2b(f"{partition}/{name}".encode(), digest_size=8).digest()


def _assign(
    shape: _Shape,
    size: int,
    node_ids: tuple[str, ...],
    capacities: list[int],
    zone_of: list[int],
    zone_names: list[str],
    kept: set[tuple[int, str]],
) -> bytearray:
    p_count, rf, zr, z_count = (
        shape.partitions,
        shape.replication_factor,
        shape.zone_redundancy,
        shape.zones,
    )
    source, sink = 0, 1
    first, extra = 2, 2 + p_count
    zone_vertex = 2 + 2 * p_count
    node_vertex = zone_vertex + p_count * z_count
    network = _FlowNetwork(node_vertex + len(node_ids))
    members: list[list[int]] = [[] for _ in range(z_count)]
    for index, zone in enumerate(zone_of):
        members[zone].append(index)

    placements: list[tuple[int, int, int]] = []  # (edge, partition, node index)
    for p in range(p_count):
        network.add_edge(source, first + p, zr)
        if rf > zr:
            network.add_edge(source, extra + p, rf - zr)
        for zone in sorted(range(z_count), key=lambda z: _spread_key(p, zone_names[z])):
            pz = zone_vertex + p * z_count + zone
            network.add_edge(first + p, pz, 1)
            if rf > zr:
                network.add_edge(extra + p, pz, rf - zr)
            for index in sorted(members[zone], key=lambda i: _spread_key(p, node_ids[i])):
                cost = 0 if (p, node_ids[index]) in kept else 1
                edge = network.add_edge(pz, node_vertex + index, 1, cost)
                placements.append((edge, p, index))
    for index, capacity in enumerate(capacities):
        network.add_edge(node_vertex + index, sink, min(capacity // size, p_count))

    if network.min_cost_flow(source, sink) != rf * p_count:
        raise AssertionError("partition size chosen above what the nodes can hold")
    chosen: list[list[int]] = [[] for _ in range(p_count)]
    for edge, p, index in placements:
        if network.flow(edge):
            chosen[p].append(index)
    ring = bytearray()
    for indexes in chosen:
        ring.extend(sorted(indexes))
    return ring


def _report(
    assignment: Assignment,
    roles: dict[str, NodeRole],
    zone_redundancy: int,
    kept: set[tuple[int, str]],
) -> LayoutReport:
    size = assignment.partition_size
    nodes = []
    for node_id, held in assignment.partition_counts().items():
        role = roles[node_id]
        capacity = role.capacity or 0
        usable = held * size
        nodes.append(
            NodeUsage(
                node_id, role.zone, capacity, held, usable, usable / capacity if capacity else 0.0
            )
        )
    moved = copies = 0
    for p, holders in enumerate(assignment.partitions()):
        new = sum((p, node_id) not in kept for node_id in holders)
        copies += new
        moved += new > 0
    return LayoutReport(
        partition_size=size,
        usable_capacity=size * assignment.partition_count,
        zone_redundancy=zone_redundancy,
        nodes=tuple(nodes),
        partitions_moved=moved,
        replica_moves=copies,
    )


def _human(count: int) -> str:
    """Bytes in decimal units, e.g. 1.5 GB."""
    if count < 1000:
        return f"{count} B"
    value = float(count)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1000
        if round(value, 1) < 1000:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} PB"


class _FlowNetwork:
    """A directed graph with integer capacities and costs, and a flow on it.

    Edges come in pairs: edge e and its reverse e ^ 1, whose residual capacity is
    the flow on e.
    """

    def __init__(self, vertices: int) -> None:
        self.out: list[list[int]] = [[] for _ in range(vertices)]
        self.head: list[int] = []
        self.residual: list[int] = []
        self.cost: list[int] = []

    def add_edge(self, tail: int, head: int, capacity: int, cost: int = 0) -> int:
        edge = len(self.head)
        self.head += (head, tail)
        self.residual += (capacity, 0)
        self.cost += (cost, -cost)
        self.out[tail].append(edge)
        self.out[head].append(edge + 1)
        return edge

    def flow(self, edge: int) -> int:
        return self.residual[edge ^ 1]

    def max_flow(self, source: int, sink: int, potentials: list[int] | None = None) -> int:
        """Push as much more flow from source to sink as fits (Dinic's algorithm).

        With `potentials`, only edges of zero reduced cost are used.
        """
        total = 0
        while True:
            level = self._levels(source, potentials)
            if level[sink] < 0:
                return total
            total += self._blocking_flow(source, sink, level, potentials)

    def min_cost_flow(self, source: int, sink: int) -> int:
        """A maximum flow of least total cost (primal-dual: shortest-path distances
        by Dijkstra on reduced costs, then a maximum flow on the zero-cost edges).

        Needs every edge's cost to be non-negative before any flow is pushed.
        """
        potentials = [0] * len(self.out)
        total = 0
        while True:
            distance = self._distances(source, potentials)
            bound = distance[sink]
            if bound < 0:
                return total
            for vertex, d in enumerate(distance):
                potentials[vertex] += bound if d < 0 or d > bound else d
            total += self.max_flow(source, sink, potentials)

    def _usable(self, edge: int, tail: int, potentials: list[int] | None) -> bool:
        if self.residual[edge] <= 0:
            return False
        if potentials is None:
            return True
        return self.cost[edge] + potentials[tail] - potentials[self.head[edge]] == 0

    def _levels(self, source: int, potentials: list[int] | None) -> list[int]:
        level = [-1] * len(self.out)
        level[source] = 0
        queue = [source]
        for vertex in queue:
            for edge in self.out[vertex]:
                head = self.head[edge]
                if level[head] < 0 and self._usable(edge, vertex, potentials):
                    level[head] = level[vertex] + 1
                    queue.append(head)
        return level

    def _blocking_flow(
        self, source: int, sink: int, level: list[int], potentials: list[int] | None
    ) -> int:
        out, head, residual = self.out, self.head, self.residual
        cursor = [0] * len(out)  # the next edge to try at each vertex
        total = 0
        path: list[int] = []
        vertex = source
        while True:
            if vertex == sink:
                push = min(residual[edge] for edge in path)
                for edge in path:
                    residual[edge] -= push
                    residual[edge ^ 1] += push
                total += push
                path.clear()
                vertex = source
                continue
            edges = out[vertex]
            i = cursor[vertex]
            while i < len(edges):
                edge = edges[i]
                if level[head[edge]] == level[vertex] + 1 and self._usable(
                    edge, vertex, potentials
                ):
                    break
                i += 1
            cursor[vertex] = i
            if i < len(edges):
                path.append(edges[i])
                vertex = head[edges[i]]
            elif vertex == source:
                return total
            else:  # a dead end: back up and skip the edge that led here
                vertex = head[path.pop() ^ 1]
                cursor[vertex] += 1

    def _distances(self, source: int, potentials: list[int]) -> list[int]:
        """Shortest distances from source by reduced cost over residual edges (-1: unreachable)."""
        distance = [-1] * len(self.out)
        distance[source] = 0
        done = [False] * len(self.out)
        heap = [(0, source)]
        while heap:
            d, vertex = heapq.heappop(heap)
            if done[vertex]:
                continue
            done[vertex] = True
            for edge in self.out[vertex]:
                if self.residual[edge] <= 0:
                    continue
                head = self.head[edge]
                reduced = self.cost[edge] + potentials[vertex] - potentials[head]
                if not done[head] and (distance[head] < 0 or d + reduced < distance[head]):
                    distance[head] = d + reduced
                    heapq.heappush(heap, (d + reduced, head))
        return distance
