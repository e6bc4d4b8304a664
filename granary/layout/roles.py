"""Node roles, layout parameters, and the changes staged for the next layout version.

Staged changes are gossiped between nodes before anyone applies them, so they
form a CRDT: each node's role change and the parameter change are
last-writer-wins registers, and `clear` (used by revert and by apply) discards
every change stamped at or before the newest one it has seen. A change staged
elsewhere after that point survives the merge; older ones are gone everywhere.
"""

from __future__ import annotations

from typing import Literal, Self

import msgspec

from granary.util.crdt import Lww, LwwMap

ZoneRedundancy = int | Literal["max"]


class LayoutError(ValueError):
    """A layout operation that cannot be carried out, with a message for the operator."""


class NodeRole(msgspec.Struct, frozen=True, array_like=True):
    """What a node does in the cluster: where it is and how many bytes it stores.

    `capacity` None makes the node a gateway: it serves the APIs but holds no partition.
    """

    zone: str
    capacity: int | None
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.zone:
            raise ValueError("a node role needs a zone")
        if self.capacity is not None and self.capacity < 0:
            raise ValueError("a node's capacity cannot be negative")

    @property
    def is_gateway(self) -> bool:
        return self.capacity is None


class LayoutParameters(msgspec.Struct, frozen=True, array_like=True):
    """Settings of the assignment algorithm.

    `zone_redundancy`: every partition spans at least this many distinct zones;
    "max" means min(replication factor, number of zones holding storage nodes).
    """

    zone_redundancy: ZoneRedundancy = "max"

    def __post_init__(self) -> None:
        if self.zone_redundancy != "max" and self.zone_redundancy < 1:
            raise ValueError("zone_redundancy must be at least 1, or 'max'")


class StagedChanges(msgspec.Struct, frozen=True, array_like=True):
    """Role and parameter changes waiting for the next `apply`.

    `roles` maps a node id to its new role, or to None to remove its role.
    `cleared_at`: every change stamped at or before it was reverted or applied.
    """

    roles: LwwMap[str, NodeRole | None] = LwwMap()
    parameters: Lww[LayoutParameters] | None = None
    cleared_at: int = 0

    def stage_role(self, node_id: str, role: NodeRole | None, now_ms: int) -> Self:
        """Stage `role` for `node_id` (None: remove the node's role)."""
        ts = max(now_ms, self.cleared_at + 1)
        return msgspec.structs.replace(self, roles=self.roles.set(node_id, role, ts))

    def stage_parameters(self, parameters: LayoutParameters, now_ms: int) -> Self:
        ts = max(now_ms, self.cleared_at + 1)
        if self.parameters is not None:
            ts = max(ts, self.parameters.ts + 1)
        return msgspec.structs.replace(self, parameters=Lww(ts, parameters))

    def clear(self) -> Self:
        """No staged change, and none stamped at or before the newest one seen here."""
        stamps = [entry.ts for entry in self.roles.entries]
        if self.parameters is not None:
            stamps.append(self.parameters.ts)
        return type(self)(cleared_at=max([self.cleared_at, *stamps]))

    def merge(self, other: Self) -> Self:
        cleared_at = max(self.cleared_at, other.cleared_at)
        roles = self.roles.merge(other.roles)
        parameters = self.parameters
        if parameters is None:
            parameters = other.parameters
        elif other.parameters is not None:
            parameters = parameters.merge(other.parameters)
        return type(self)(
            roles=LwwMap(tuple(e for e in roles.entries if e.ts > cleared_at)),
            parameters=parameters
            if parameters is not None and parameters.ts > cleared_at
            else None,
            cleared_at=cleared_at,
        )

    def role_changes(self) -> dict[str, NodeRole | None]:
        """The staged role of each node (None: removal), in node id order."""
        return dict(self.roles.items())

    def staged_parameters(self) -> LayoutParameters | None:
        return None if self.parameters is None else self.parameters.value
