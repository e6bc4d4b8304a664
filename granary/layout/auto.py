"""Automatic layout: every node stages its own role, one node applies. Sans-IO.

A node set to automatic layout (`[auto_layout]`) stages the role its
configuration gives it (zone, capacity) whenever the layout, applied or staged,
says otherwise. Staged changes are a CRDT gossiped with the layout (roles.py),
so every node's role reaches every other without an operator.

Only one node ever applies: the coordinator, named in the configuration by its
host name (a StatefulSet's first pod, `granary-0`). Every automatic version thus
has a single author, and two different layouts can never be applied under one
number, which takes two authors (history.py's LayoutConflict). The coordinator
applies once the staged changes are worth a version: before the first layout,
once `expected_nodes` nodes have staged a role (the first layout then holds them
all, and no partition moves right after it); later, as soon as anything is
staged. A coordinator that is down delays changes and never mixes them up. An
operator who applies by hand is a second author: leave automatic layout off then.
"""

from __future__ import annotations

from dataclasses import dataclass

from granary.layout.history import ClusterLayout
from granary.layout.roles import NodeRole


@dataclass(frozen=True)
class AutoLayout:
    """This node's part in automatic layout."""

    zone: str | None
    """This node's zone; None: its Kubernetes node's zone label, read at start."""
    capacity: int | None
    """Bytes this node stores; None: its first data directory's file system size."""
    expected_nodes: int
    """Nodes with a staged role before the coordinator applies the first layout."""
    coordinator: bool
    """Whether this node is the one that applies."""


def role_to_stage(layout: ClusterLayout, node: str, role: NodeRole) -> bool:
    """Whether `node` should stage `role`: the staged role, else the applied one, differs."""
    staged = layout.staged_roles
    if node in staged:
        return staged[node] != role
    return layout.roles.get(node) != role


def version_to_apply(layout: ClusterLayout, expected_nodes: int) -> int | None:
    """The version the coordinator applies now, or None while there is nothing worth
    applying (nothing staged, or too few nodes for the first layout)."""
    staged = layout.staged_roles
    if not staged and layout.staged_parameters is None:
        return None
    if layout.version == 0:
        with_roles = [node for node, role in staged.items() if role is not None]
        if len(with_roles) < expected_nodes:
            return None
    return layout.version + 1
