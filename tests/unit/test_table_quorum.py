"""Quorum calls: the write fan-out and the nearest-first read, hedged or not."""

from __future__ import annotations

import asyncio

import pytest

from granary.net.hedging import HedgeBudget, Hedging, ReadLatencies
from granary.table.quorum import QuorumError, call_nearest, call_quorum

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32
STALLED = 30.0  # seconds: longer than any test runs, so only a cancel ends it


class Nodes:
    """Calls that answer after a per-node delay, or fail; records who was asked."""

    def __init__(self, delays: dict[bytes, float], failing: frozenset[bytes] = frozenset()):
        self.delays = delays
        self.failing = failing
        self.asked: list[bytes] = []

    async def call(self, node: bytes) -> bytes:
        self.asked.append(node)
        await asyncio.sleep(self.delays[node])
        if node in self.failing:
            raise ConnectionError(f"{node[:1]!r} is down")
        return node[:1]


def hedging(burst: float = 10.0) -> Hedging:
    return Hedging(
        lambda node: 0.0,
        ReadLatencies(floor=0.05, cap=0.05),
        HedgeBudget(fraction=0.0, burst=burst),
    )


def test_without_hedging_the_nearest_quorum_is_waited_for():
    nodes = Nodes({A: 0.2, B: 0.0, C: 0.0})
    answers = asyncio.run(call_nearest([A, B, C], nodes.call, 2))
    assert sorted(answers) == [b"a", b"b"]
    assert nodes.asked == [A, B]


def test_a_stalled_node_is_hedged_and_asked_last_afterwards():
    nodes = Nodes({A: STALLED, B: 0.0, C: 0.0})
    policy = hedging()

    async def main():
        answers = await call_nearest([A, B, C], nodes.call, 2, policy)
        assert sorted(answers) == [b"b", b"c"]
        assert nodes.asked == [A, B, C]
        assert (policy.started, policy.won) == (1, 1)
        nodes.asked.clear()
        assert sorted(await call_nearest([A, B, C], nodes.call, 2, policy)) == [b"b", b"c"]
        assert nodes.asked == [B, C]  # A lost the race: asked last, so not at all
        assert policy.started == 1

    asyncio.run(main())


def test_hedging_switched_off_waits_like_no_hedging():
    nodes = Nodes({A: 0.2, B: 0.0, C: 0.0})
    policy = hedging()
    policy.enabled = False
    assert sorted(asyncio.run(call_nearest([A, B, C], nodes.call, 2, policy))) == [b"a", b"b"]
    assert nodes.asked == [A, B]
    assert policy.started == 0


def test_with_the_budget_spent_a_stalled_node_is_hedged_after_a_second_delay():
    nodes = Nodes({A: STALLED, B: 0.0, C: 0.0})
    policy = hedging(burst=0.0)
    answers = asyncio.run(call_nearest([A, B, C], nodes.call, 2, policy))
    assert sorted(answers) == [b"b", b"c"]
    assert policy.started == 1


def test_a_failure_brings_in_the_next_node_at_once():
    nodes = Nodes({A: 0.0, B: 0.0, C: 0.0}, failing=frozenset({A}))
    policy = hedging()
    assert sorted(asyncio.run(call_nearest([A, B, C], nodes.call, 2, policy))) == [b"b", b"c"]
    assert policy.started == 0


def test_too_many_failures_raise_a_quorum_error():
    nodes = Nodes({A: 0.0, B: 0.0, C: 0.0}, failing=frozenset({A, B}))
    with pytest.raises(QuorumError) as raised:
        asyncio.run(call_nearest([A, B, C], nodes.call, 2, hedging()))
    assert raised.value.successes == 1


def test_call_quorum_returns_at_the_quorum_and_lets_the_rest_finish():
    nodes = Nodes({A: 0.0, B: 0.0, C: 0.3})

    async def main():
        answers = await call_quorum([A, B, C], nodes.call, 2)
        assert sorted(answers) == [b"a", b"b"]
        assert sorted(nodes.asked) == [A, B, C]

    asyncio.run(main())


def test_a_hedge_that_loses_the_race_is_neither_counted_as_won_nor_marked_slow():
    nodes = Nodes({A: 0.15, B: 0.0, C: 1.0})
    policy = hedging()
    answers = asyncio.run(call_nearest([A, B, C], nodes.call, 2, policy))
    assert sorted(answers) == [b"a", b"b"]
    assert nodes.asked == [A, B, C]  # A was late, so C was asked too, but A answered first
    assert (policy.started, policy.won) == (1, 0)
    assert policy.latencies.order([A, B, C]) == [A, B, C]
