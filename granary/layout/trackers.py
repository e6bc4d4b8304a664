"""Per-node progress through layout versions, gossiped with the layout history.

Three maps from node id to a layout version, each only ever raised, so two
copies merge by taking the maximum per node (a CRDT):

- `ack`: the node writes to every version up to this one, and every write it
  started before knowing this version has finished.
- `sync`: the node finished a full anti-entropy pass of its partitions, with
  the holders of every active version, started after every node had acked
  this version.
- `sync_ack`: the node reads from this version or a newer one, never older.

A node missing from a map counts as version 0: nothing done yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Self

import msgspec

TrackerName = Literal["ack", "sync", "sync_ack"]
TRACKER_NAMES: tuple[TrackerName, ...] = ("ack", "sync", "sync_ack")


def _normal(versions: dict[str, int]) -> dict[str, int]:
    """Sorted by node, without the entries at 0 (the same as no entry)."""
    return {node: version for node, version in sorted(versions.items()) if version > 0}


def _merged(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    merged = dict(a)
    for node, version in b.items():
        if version > merged.get(node, 0):
            merged[node] = version
    return merged


class UpdateTrackers(msgspec.Struct, frozen=True, array_like=True):
    ack: dict[str, int] = {}
    sync: dict[str, int] = {}
    sync_ack: dict[str, int] = {}

    def __post_init__(self) -> None:
        # Equal trackers must compare and encode equal; msgpack maps keep insertion order.
        for name in TRACKER_NAMES:
            versions = getattr(self, name)
            if list(versions) != sorted(versions) or 0 in versions.values():
                msgspec.structs.force_setattr(self, name, _normal(versions))

    def merge(self, other: Self) -> Self:
        return type(self)(
            *(_merged(getattr(self, name), getattr(other, name)) for name in TRACKER_NAMES)
        )

    def get(self, name: TrackerName, node: str) -> int:
        return getattr(self, name).get(node, 0)

    def raised(self, name: TrackerName, nodes: Iterable[str], version: int) -> Self:
        """These trackers with `name` at least `version` for each of `nodes`."""
        current: dict[str, int] = getattr(self, name)
        raised = _merged(current, dict.fromkeys(nodes, version))
        if raised == current:
            return self
        return msgspec.structs.replace(self, **{name: _normal(raised)})

    def min_among(self, name: TrackerName, nodes: Iterable[str], default: int) -> int:
        """The lowest version `name` reached among `nodes` (`default` when there are none)."""
        versions = getattr(self, name)
        return min((versions.get(node, 0) for node in nodes), default=default)

    def count_at_least(self, name: TrackerName, nodes: Iterable[str], version: int) -> int:
        versions = getattr(self, name)
        return sum(versions.get(node, 0) >= version for node in nodes)
