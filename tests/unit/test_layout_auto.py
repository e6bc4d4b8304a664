"""Automatic layout's rules (granary/layout/auto.py): when a node stages its role, when
the coordinator applies; and, over random gossip orders, that nodes staging their roles
while only the coordinator applies converge on one history without a conflict."""

from __future__ import annotations

import random

import pytest

from granary.layout.auto import role_to_stage, version_to_apply
from granary.layout.history import LayoutHistory
from granary.layout.roles import NodeRole

NODES = [f"{n:02x}" * 32 for n in range(1, 6)]
ROLE = NodeRole(zone="a", capacity=1 << 30)


def test_a_node_stages_its_role_until_the_layout_holds_it():
    layout = LayoutHistory.initial(3).current
    assert role_to_stage(layout, NODES[0], ROLE)
    staged = layout.stage_role(NODES[0], ROLE, 1)
    assert not role_to_stage(staged, NODES[0], ROLE)
    assert role_to_stage(staged, NODES[0], NodeRole(zone="b", capacity=1 << 30))
    single = LayoutHistory.initial(1).current.stage_role(NODES[0], ROLE, 1)
    applied, _ = single.apply_staged(1)
    assert not role_to_stage(applied, NODES[0], ROLE)


def test_the_first_layout_waits_for_the_expected_nodes_and_later_ones_do_not():
    layout = LayoutHistory.initial(3).current
    assert version_to_apply(layout, 3) is None
    for index, node in enumerate(NODES[:2]):
        layout = layout.stage_role(node, NodeRole(zone="abc"[index], capacity=1 << 30), 1)
    assert version_to_apply(layout, 3) is None
    layout = layout.stage_role(NODES[2], NodeRole(zone="c", capacity=1 << 30), 1)
    assert version_to_apply(layout, 3) == 1
    first, _ = layout.apply_staged(1)
    assert version_to_apply(first, 3) is None
    assert version_to_apply(first.stage_role(NODES[3], ROLE, 2), 3) == 2


@pytest.mark.parametrize("seed", range(20))
def test_nodes_converge_on_one_history_with_one_author(seed):
    """Five nodes stage roles (two of them twice, as a changed configuration would);
    histories travel in random order between random pairs; the coordinator applies
    whenever its rules say so. No merge ever meets a conflict, and once everything
    has been gossiped every node holds the same history, with every role applied."""
    rng = random.Random(seed)
    zones = {node: "abc"[i % 3] for i, node in enumerate(NODES)}
    histories = {node: LayoutHistory.initial(3) for node in NODES}
    coordinator = NODES[0]
    wanted = {
        node: NodeRole(zone=zones[node], capacity=(1 + i) << 30) for i, node in enumerate(NODES)
    }
    clock = 0
    for step in range(300):
        node = rng.choice(NODES)
        clock += 1
        if step == 150:  # two nodes change their role
            for changed in NODES[3:]:
                wanted[changed] = NodeRole(zone="c", capacity=7 << 30)
        history = histories[node]
        if role_to_stage(history.current, node, wanted[node]):
            history = history.update(history.current.stage_role(node, wanted[node], clock))
        if node == coordinator:
            version = version_to_apply(history.current, 3)
            if version is not None:
                history = history.update(history.current.apply_staged(version)[0])
        histories[node] = history
        other = rng.choice(NODES)
        merged = histories[other].merge(histories[node])  # never a LayoutConflict
        histories[other] = merged
        histories[node] = histories[node].merge(merged)
    # Let the staging settle: every node stages, the coordinator applies, all gossip.
    for _ in range(4):
        for node in NODES:
            history = histories[node]
            if role_to_stage(history.current, node, wanted[node]):
                clock += 1
                histories[node] = history.update(
                    history.current.stage_role(node, wanted[node], clock)
                )
        everything = histories[NODES[0]]
        for node in NODES[1:]:
            everything = everything.merge(histories[node])
        version = version_to_apply(everything.current, 3)
        if version is not None:
            everything = everything.update(everything.current.apply_staged(version)[0])
        histories = {node: histories[node].merge(everything) for node in NODES}
    current = histories[NODES[0]].current
    assert all(histories[node].current == current for node in NODES)
    assert current.roles == wanted
