"""The hedge delay, and hedged block reads over a fake network."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from block_fakes import FixedDistances, FixedReplication, block_managers

from granary.block.codec import block_hash
from granary.block.holders import BlockHolders
from granary.block.manager import BlockManager, BlockUnavailable
from granary.net.errors import RpcError
from granary.net.hedging import MIN_SAMPLES, ReadLatencies, percentile

NEAR, FAR, OLD, ME = b"n" * 32, b"f" * 32, b"o" * 32, b"m" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_percentile():
    assert percentile([5, 1, 4, 2, 3], 0.9) == 5
    assert percentile(range(1, 101), 0.9) == 90
    assert percentile([7.0], 0.9) == 7.0


def test_delay_without_history_is_round_trips_plus_a_typical_read():
    latencies = ReadLatencies(floor=0.01, cap=1.0, rtt_factor=4.0, first_guess=0.02)
    assert latencies.delay(NEAR, None) == pytest.approx(0.02)
    assert latencies.delay(NEAR, 0.05) == pytest.approx(0.22)
    for _ in range(3):
        latencies.record(FAR, 0.1)  # too few to judge FAR, but they set the typical read
    assert latencies.delay(NEAR, 0.05) == pytest.approx(0.3)
    assert latencies.delay(NEAR, 10.0) == 1.0  # the cap
    assert latencies.delay(NEAR, 0.0) == pytest.approx(0.1)


def test_delay_with_history_is_the_nodes_90th_percentile_within_floor_and_cap():
    latencies = ReadLatencies(floor=0.01, cap=1.0)
    for i in range(MIN_SAMPLES * 2):
        latencies.record(NEAR, 0.001 * (i + 1))
    assert latencies.delay(NEAR, 5.0) == pytest.approx(0.015)  # the RTT no longer matters
    fast = ReadLatencies(floor=0.01, cap=1.0)
    for _ in range(MIN_SAMPLES):
        fast.record(NEAR, 0.0001)
    assert fast.delay(NEAR, None) == 0.01  # the floor


def test_no_hedge_before_the_backup_could_answer():
    latencies = ReadLatencies(floor=0.001, cap=1.0)
    for _ in range(MIN_SAMPLES):
        latencies.record(ME, 0.002)  # local reads: fast
        latencies.record(FAR, 0.02)  # remote reads: ten times slower
    assert latencies.hedge_delay(ME, 0.0, FAR, 0.001) == pytest.approx(0.02)
    assert latencies.hedge_delay(ME, 0.0, None, None) == pytest.approx(0.002)
    assert latencies.hedge_delay(FAR, 0.001, ME, 0.0) == pytest.approx(0.02)
    # A backup never read from: a few round trips plus the first guess.
    guess = latencies.rtt_factor * 0.001 + latencies.first_guess
    assert latencies.hedge_delay(ME, 0.0, NEAR, 0.001) == pytest.approx(guess)


def test_a_node_that_lost_a_hedge_is_asked_last_for_a_while():
    clock = Clock()
    latencies = ReadLatencies(slow_penalty=5.0, clock=clock)
    latencies.mark_slow(NEAR)
    assert latencies.order([NEAR, FAR, OLD]) == [FAR, OLD, NEAR]
    clock.now += 5.0
    assert latencies.order([NEAR, FAR, OLD]) == [NEAR, FAR, OLD]


class FakeNet:
    """Remote nodes answering block/get after a delay, with given bytes (or an error)."""

    def __init__(self, answers: dict[bytes, tuple[float, bytes | Exception]]) -> None:
        self.answers = answers
        self.asked: list[bytes] = []

    def endpoint(self, name, handler) -> None:
        pass

    async def call(self, node, endpoint, body, *, priority, timeout, stream=None):
        self.asked.append(node)
        delay, answer = self.answers[node]
        await asyncio.sleep(delay)
        if isinstance(answer, Exception):
            raise answer

        async def reply():
            yield answer

        return b"", reply()


class FakeAssignment:
    def __init__(self, nodes: list[bytes]) -> None:
        self.ring = b"\x00"
        self.nodes = nodes

    def nodes_of(self, partition: int) -> tuple[str, ...]:
        return tuple(n.hex() for n in self.nodes)


# A layout history whose one older version put the blocks on OLD.
OLD_LAYOUT = SimpleNamespace(
    history=SimpleNamespace(older=(SimpleNamespace(assignment=FakeAssignment([OLD])),))
)


@pytest.fixture
def make_manager(tmp_path: Path):
    with block_managers(tmp_path) as make:

        def with_fast_hedges(net: FakeNet, holders: list[bytes]) -> BlockManager:
            manager = make(
                net,
                BlockHolders(FixedReplication(holders), OLD_LAYOUT),
                FixedDistances([ME, NEAR, FAR, OLD]),
                ME,
                gc_grace_ms=0,
            )
            manager.hedging.latencies = ReadLatencies(floor=0.05, cap=0.05)
            return manager

        yield with_fast_hedges


DATA = b"block content" * 100
ID = block_hash(DATA)


def test_a_late_holder_is_hedged_and_the_faster_answer_wins(make_manager):
    net = FakeNet({NEAR: (30.0, DATA), FAR: (0.0, DATA)})
    manager = make_manager(net, [NEAR, FAR])

    async def main():
        assert await manager.get(ID) == DATA
        assert (manager.hedging.started, manager.hedging.won) == (1, 1)
        # NEAR lost to the hedge: the next read asks FAR first and needs no hedge.
        net.asked.clear()
        assert await manager.get(ID) == DATA
        assert net.asked == [FAR]
        assert manager.hedging.started == 1

    asyncio.run(main())


def test_without_hedging_the_late_holder_is_waited_for(make_manager):
    net = FakeNet({NEAR: (0.3, DATA), FAR: (0.0, DATA)})
    manager = make_manager(net, [NEAR, FAR])
    manager.hedging.enabled = False

    async def main():
        assert await manager.get(ID) == DATA
        assert net.asked == [NEAR]
        assert manager.hedging.started == 0

    asyncio.run(main())


def test_a_corrupt_copy_is_never_served(make_manager):
    net = FakeNet({NEAR: (0.0, b"rotten" + DATA[6:]), FAR: (0.0, DATA)})
    manager = make_manager(net, [NEAR, FAR])

    async def main():
        assert await manager.get(ID) == DATA
        assert net.asked == [NEAR, FAR]  # the failure brought FAR in at once
        assert manager.stats.corrupt_copies == 1
        assert manager.hedging.started == 0

    asyncio.run(main())


def test_older_layout_holders_are_asked_when_current_ones_fail(make_manager):
    missing = RpcError("missing", "not here")
    net = FakeNet({NEAR: (0.0, missing), FAR: (0.0, missing), OLD: (0.0, DATA)})
    manager = make_manager(net, [NEAR, FAR])

    async def main():
        assert await manager.get(ID) == DATA
        assert net.asked == [NEAR, FAR, OLD]

    asyncio.run(main())


def test_a_holder_missing_locally_is_queued_for_resync_and_read_elsewhere(make_manager):
    net = FakeNet({NEAR: (0.0, DATA), OLD: (0.0, RpcError("missing", "no"))})
    manager = make_manager(net, [ME, NEAR])

    async def main():
        assert await manager.get(ID) == DATA
        assert manager.resync.queued_at(ID)  # this node should hold it: fetch it back
        net.answers[NEAR] = (0.0, RpcError("missing", "no"))
        with pytest.raises(BlockUnavailable):
            await manager.get(ID)

    asyncio.run(main())


def test_a_stalled_holder_loses_even_when_its_hedge_failed_and_a_third_holder_answered(
    make_manager,
):
    net = FakeNet({NEAR: (30.0, DATA), FAR: (0.0, RpcError("missing", "no")), OLD: (0.0, DATA)})
    manager = make_manager(net, [NEAR, FAR, OLD])

    async def main():
        assert await manager.get(ID) == DATA
        assert net.asked == [NEAR, FAR, OLD]  # FAR's failure brought OLD in at once

    asyncio.run(main())
    assert (manager.hedging.started, manager.hedging.won) == (1, 1)
    assert manager.read_order(ID)[0] == [FAR, OLD, NEAR]  # NEAR is asked last for a while
