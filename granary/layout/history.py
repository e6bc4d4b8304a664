"""Numbered cluster layouts, the history of applied ones, and how nodes merge them.

There is no consensus: an operator applies version N + 1 on one node and the
nodes gossip their histories. A higher version simply wins. Two different
layouts applied under the same number (from two places at once) cannot be
reconciled, so `LayoutHistory.merge` raises `LayoutConflict` rather than pick
one, until the operator applies a newer version. Staged changes merge as a
CRDT whatever the versions (see `StagedChanges`), and so do the per-node
trackers that say how far each node has got through a layout change (see
`UpdateTrackers`).
"""

from __future__ import annotations

from typing import Self

import msgspec

from granary.layout.assignment import Assignment, LayoutReport, compute_assignment
from granary.layout.roles import LayoutError, LayoutParameters, NodeRole, StagedChanges
from granary.layout.trackers import UpdateTrackers

RETIRED_VERSIONS_KEPT = 5


class LayoutConflict(LayoutError):
    """Two different layouts were applied under the same version number."""

    def __init__(self, version: int) -> None:
        super().__init__(
            f"two different layouts were applied as version {version}; "
            f"apply a version above {version} from one node to settle the layout"
        )
        self.version = version


class ClusterLayout(msgspec.Struct, frozen=True, array_like=True):
    """One numbered layout: the roles, the parameters and the partition assignment
    applied as `version`, plus the changes staged for the next version."""

    version: int
    parameters: LayoutParameters
    roles: dict[str, NodeRole]
    assignment: Assignment
    staging: StagedChanges = StagedChanges()

    def __post_init__(self) -> None:
        # Equal layouts must encode to equal bytes; msgpack maps keep insertion order.
        if list(self.roles) != sorted(self.roles):
            msgspec.structs.force_setattr(self, "roles", dict(sorted(self.roles.items())))

    @classmethod
    def initial(cls, replication_factor: int) -> Self:
        """Version 0: no roles, nothing assigned."""
        if replication_factor < 1:
            raise LayoutError("the replication factor must be at least 1")
        return cls(0, LayoutParameters(), {}, Assignment(replication_factor))

    @property
    def replication_factor(self) -> int:
        return self.assignment.replication_factor

    @property
    def staged_roles(self) -> dict[str, NodeRole | None]:
        """The staged role of each node; None stages the removal of its role."""
        return self.staging.role_changes()

    @property
    def staged_parameters(self) -> LayoutParameters | None:
        return self.staging.staged_parameters()

    def stage_role(self, node_id: str, role: NodeRole, now_ms: int) -> Self:
        return self._with_staging(self.staging.stage_role(node_id, role, now_ms))

    def stage_remove(self, node_id: str, now_ms: int) -> Self:
        if node_id not in self.roles and self.staged_roles.get(node_id) is None:
            raise LayoutError(f"node {node_id} has no role to remove")
        return self._with_staging(self.staging.stage_role(node_id, None, now_ms))

    def stage_parameters(self, parameters: LayoutParameters, now_ms: int) -> Self:
        return self._with_staging(self.staging.stage_parameters(parameters, now_ms))

    def revert_staged(self) -> Self:
        return self._with_staging(self.staging.clear())

    def preview(self) -> tuple[Self, LayoutReport]:
        """What `apply_staged(version + 1)` gives, without committing to it."""
        return self.apply_staged(self.version + 1)

    def apply_staged(self, version: int) -> tuple[Self, LayoutReport]:
        """The next version: staged changes applied, partitions reassigned, staging cleared.

        `version` must be the current one plus one, so that an operator who
        looked at an outdated layout cannot overwrite a newer one.
        """
        if version != self.version + 1:
            raise LayoutError(
                f"expected version {self.version + 1} (the current layout is version "
                f"{self.version}), got {version}"
            )
        roles = dict(self.roles)
        for node_id, role in self.staged_roles.items():
            if role is None:
                roles.pop(node_id, None)
            else:
                roles[node_id] = role
        parameters = self.staged_parameters
        if parameters is None:
            parameters = self.parameters
        assignment, report = compute_assignment(
            roles, self.replication_factor, parameters, self.assignment
        )
        applied = type(self)(version, parameters, roles, assignment, self.staging.clear())
        return applied, report

    def committed(self) -> Self:
        """This layout without its staged changes: what was applied as `version`."""
        return self._with_staging(StagedChanges())

    def _with_staging(self, staging: StagedChanges) -> Self:
        return msgspec.structs.replace(self, staging=staging)


class LayoutHistory(msgspec.Struct, frozen=True, array_like=True):
    """The current layout (with the staged changes), the versions applied before it,
    and how far each node has got through them.

    Versions from `min_active` to the current one are *active*: a layout change
    is under way until the nodes have moved their data, so writes go to every
    active version and reads to one the cluster has synced (see progress.py).
    `older` is newest first, without staged changes: every active version
    before the current one, then at most RETIRED_VERSIONS_KEPT retired ones
    (kept only to find blocks written under them).
    """

    current: ClusterLayout
    older: tuple[ClusterLayout, ...] = ()
    trackers: UpdateTrackers = UpdateTrackers()
    min_active: int = 0

    @classmethod
    def initial(cls, replication_factor: int) -> LayoutHistory:
        return cls(ClusterLayout.initial(replication_factor))

    def version(self, number: int) -> ClusterLayout | None:
        """The layout applied as version `number`, if still kept."""
        if number == self.current.version:
            return self.current
        return next((layout for layout in self.older if layout.version == number), None)

    def active(self) -> tuple[ClusterLayout, ...]:
        """The active versions, newest (the current one) first."""
        return (self.current, *(v for v in self.older if v.version >= self.min_active))

    def retired(self) -> tuple[ClusterLayout, ...]:
        """The retired versions still kept, newest first."""
        return tuple(v for v in self.older if v.version < self.min_active)

    def active_nodes(self) -> list[str]:
        """Every node with a role (gateways included) in an active version: the nodes
        that may be writing or reading under one of them."""
        return sorted({node for layout in self.active() for node in layout.roles})

    def update(self, layout: ClusterLayout) -> LayoutHistory:
        """This history with `layout` merged in: a newer version, or new staged changes."""
        return self.merge(type(self)(layout))

    def with_trackers(self, trackers: UpdateTrackers) -> LayoutHistory:
        return msgspec.structs.replace(self, trackers=trackers)

    def merge(self, other: LayoutHistory) -> LayoutHistory:
        """Both histories' versions, trackers and staged changes merged.

        The higher current version wins, and with it its view of the older
        versions: applying a new version from one node is how an operator
        settles a conflict. Raises LayoutConflict when both sides' current
        layouts carry the same number but differ. Trackers and `min_active`
        only grow, so they merge by maximum.
        """
        mine, theirs = self.current.committed(), other.current.committed()
        if mine.version == theirs.version and mine != theirs:
            raise LayoutConflict(mine.version)
        ahead, behind = (self, other) if mine.version >= theirs.version else (other, self)
        by_number: dict[int, ClusterLayout] = {}
        for layout in ahead._committed():
            by_number[layout.version] = layout
        for layout in behind._committed():
            known = by_number.setdefault(layout.version, layout)
            if known != layout and mine.version == theirs.version:
                # Same current layout, different memories of an older one: pick
                # one deterministically so every node keeps the same history.
                by_number[layout.version] = max(known, layout, key=msgspec.msgpack.encode)
        staging = self.current.staging.merge(other.current.staging)
        return _assemble(
            by_number,
            staging,
            self.trackers.merge(other.trackers),
            max(self.min_active, other.min_active),
        )

    def retire_before(self, version: int) -> LayoutHistory:
        """This history with every version below `version` retired (never the current one)."""
        floor = min(max(self.min_active, version), self.current.version)
        if floor == self.min_active:
            return self
        by_number = {layout.version: layout for layout in self._committed()}
        return _assemble(by_number, self.current.staging, self.trackers, floor)

    def retire_unread(self) -> LayoutHistory:
        """Retire the oldest active versions that no node reads any more.

        The oldest active version retires once every node of the active
        versions reads from the next one or a newer one (its sync_ack): reads
        moved there only after the writes held by the oldest version reached
        the newer ones. A version without roles holds no data and retires at once.
        """
        history = self
        while len(active := history.active()) > 1:
            oldest, following = active[-1], active[-2]
            if oldest.roles:
                reading = history.trackers.min_among("sync_ack", history.active_nodes(), 0)
                if reading < following.version:
                    break
            history = history.retire_before(following.version)
        return history

    def _committed(self) -> tuple[ClusterLayout, ...]:
        return (self.current.committed(), *self.older)


def _assemble(
    by_number: dict[int, ClusterLayout],
    staging: StagedChanges,
    trackers: UpdateTrackers,
    min_active: int,
) -> LayoutHistory:
    """A history of the versions in `by_number` (committed layouts): the newest one
    current with `staging`, every active one, and the newest retired ones."""
    numbers = sorted(by_number, reverse=True)
    active = [n for n in numbers if n >= min_active]
    retired = [n for n in numbers if n < min_active][:RETIRED_VERSIONS_KEPT]
    kept = [by_number[n] for n in (*active, *retired)]
    current = msgspec.structs.replace(kept[0], staging=staging)
    return LayoutHistory(current, tuple(kept[1:]), trackers, min_active)
