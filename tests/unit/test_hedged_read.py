"""The hedged-read primitive shared by table and block reads (granary/net/hedging.py)."""

from __future__ import annotations

import asyncio

import pytest

from granary.net.hedging import HedgeBudget, Hedging, ReadLatencies, hedged_read

A, B, C, F1, F2 = (bytes([n]) * 32 for n in b"abcxy")
STALLED = 30.0  # seconds: longer than any test runs, so only a cancel ends it


class Nodes:
    """Reads that answer after a per-node delay or raise; records who was asked and cancelled."""

    def __init__(self, delays: dict[bytes, float], failing: dict[bytes, Exception] | None = None):
        self.delays = delays
        self.failing = failing or {}
        self.asked: list[bytes] = []
        self.cancelled: list[bytes] = []

    async def read(self, node: bytes) -> bytes:
        self.asked.append(node)
        try:
            await asyncio.sleep(self.delays[node])
        except asyncio.CancelledError:
            self.cancelled.append(node)
            raise
        if node in self.failing:
            raise self.failing[node]
        return node[:1]


def hedging() -> Hedging:
    return Hedging(lambda node: 0.0, ReadLatencies(floor=0.05, cap=0.05), HedgeBudget(0.0, 10.0))


def test_a_hedge_that_fails_brings_in_the_next_node_and_the_stalled_one_still_loses():
    nodes = Nodes({A: STALLED, B: 0.0, C: 0.0}, {B: ConnectionError("down")})
    policy = hedging()

    async def main():
        got = await hedged_read([A, B, C], nodes.read, policy)
        assert got.answers == [b"c"]
        assert [type(e) for e in got.errors] == [ConnectionError]
        assert nodes.asked == [A, B, C]
        await asyncio.sleep(0)  # a cancelled read ends at its next step
        assert nodes.cancelled == [A]

    asyncio.run(main())
    assert (policy.started, policy.won) == (1, 1)
    assert policy.latencies.order([A, B, C]) == [B, C, A]


def test_a_hedge_that_loses_the_race_is_neither_a_win_nor_a_slow_node():
    nodes = Nodes({A: 0.15, B: 0.0, C: 1.0})
    policy = hedging()

    async def main():
        got = await hedged_read([A, B, C], nodes.read, policy, wanted=2)
        assert sorted(got.answers) == [b"a", b"b"]
        assert nodes.asked == [A, B, C]  # A was late: C was asked too
        await asyncio.sleep(0)
        assert nodes.cancelled == [C]

    asyncio.run(main())
    assert (policy.started, policy.won) == (1, 0)
    assert policy.latencies.order([A, B, C]) == [A, B, C]


def test_the_fallback_is_asked_one_by_one_once_every_node_failed_and_is_never_hedged():
    down = ConnectionError("down")
    nodes = Nodes({A: 0.0, B: 0.1, F1: 0.2, F2: 0.0}, {A: down, B: down})
    policy = hedging()
    heard: list[bytes] = []

    async def failed(node: bytes, error: BaseException) -> None:
        heard.append(node)

    got = asyncio.run(hedged_read([A, B], nodes.read, policy, fallback=[F1, F2], on_failure=failed))
    assert got.answers == [b"x"]
    assert nodes.asked == [A, B, F1]  # F1 was late, but F2 is never a hedge
    assert heard == [A, B]
    assert policy.started == 0


def test_an_unexpected_error_is_raised_and_the_other_reads_cancelled():
    nodes = Nodes({A: STALLED, B: 0.0}, {B: ValueError("bug")})

    async def main():
        with pytest.raises(ValueError):
            await hedged_read([A, B], nodes.read, hedging(), failures=(ConnectionError,))
        await asyncio.sleep(0)
        assert nodes.cancelled == [A]

    asyncio.run(main())


def test_too_few_answers_come_back_with_every_error():
    down = ConnectionError("down")
    nodes = Nodes({A: 0.0, B: 0.0, C: 0.0}, {A: down, C: down})
    got = asyncio.run(hedged_read([A, B, C], nodes.read, None, wanted=2))
    assert got.answers == [b"b"]
    assert got.errors == [down, down]
