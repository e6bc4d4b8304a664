"""Resync of single blocks (fetch, offload, forget), its dispatcher, and the block GC's
hand-over of copies this node should not hold, against fake peers."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from block_fakes import FixedDistances, FixedReplication, block_managers

from granary.block import resync, resync_worker
from granary.block.codec import block_hash
from granary.block.healing import AUTOMATIC_WALK_DELAY_MS, BlockHealing
from granary.block.holders import BlockHolders
from granary.block.manager import OffloadIncomplete
from granary.block.resync import Action, ResyncError
from granary.block.resync_worker import Resyncer
from granary.block.transfer import (
    GET_ENDPOINT,
    NEED_ENDPOINT,
    PUT_ENDPOINT,
    NeedReply,
    encode_need,
    receive,
)
from granary.net.errors import PeerUnavailable
from granary.util.background import Workers, WorkerStatus
from granary.util.time import now_ms

ME, NEAR, FAR = b"m" * 32, b"n" * 32, b"f" * 32
DATA = b"some block" * 1000
ID = block_hash(DATA)


class Peers:
    """Peers that hold blocks in memory and answer get, need and put.

    Every peer counts references to the block unless `counting` names those that do.
    """

    def __init__(
        self,
        holding: dict[bytes, set[bytes]],
        down: set[bytes] = frozenset(),
        counting: set[bytes] | None = None,
    ) -> None:
        self.holding = holding
        self.down = down
        self.counting = counting
        self.received: list[bytes] = []

    def endpoint(self, name, handler) -> None:
        pass

    async def call(self, node, endpoint, body, *, priority, timeout, stream=None):
        if node in self.down:
            raise PeerUnavailable("down")
        has = body in self.holding.get(node, set())
        if endpoint == NEED_ENDPOINT:
            needed = self.counting is None or node in self.counting
            return encode_need(NeedReply(present=has, needed=needed)), None
        if endpoint == PUT_ENDPOINT:
            assert await receive(stream) == DATA
            self.received.append(node)
            return b"", None
        assert endpoint == GET_ENDPOINT
        if not has:
            raise PeerUnavailable("missing")

        async def reply():
            yield DATA

        return b"", reply()


def local_manager(make, peers: Peers, holders: list[bytes], gc_grace_ms: int = 60_000):
    """This node's BlockManager, with `holders` for every block and `peers` for the others."""
    return make(
        peers,
        BlockHolders(FixedReplication(holders)),
        FixedDistances([ME, NEAR, FAR]),
        ME,
        gc_grace_ms=gc_grace_ms,
    )


@pytest.fixture
def resyncer(tmp_path: Path):
    with block_managers(tmp_path) as make:

        def with_block(peers: Peers, holders: list[bytes], *, counted: bool, stored: bool):
            manager = local_manager(make, peers, holders)
            if counted:
                manager.db.transaction(lambda tx: manager.refcounts.increment(tx, ID))
            if stored:
                manager.store.write(ID, DATA)
            return Resyncer(manager, WorkerStatus("block-resync"))

        yield with_block


def test_a_missing_block_this_node_should_hold_is_fetched(resyncer):
    worker = resyncer(Peers({FAR: {ID}}), [ME, NEAR, FAR], counted=True, stored=False)
    assert asyncio.run(worker.resync_block(ID)) is Action.FETCH
    assert worker.manager.store.read(ID) == DATA
    assert asyncio.run(worker.resync_block(ID)) is Action.NOTHING


def test_offload_sends_to_the_holders_that_lack_it_then_deletes(resyncer):
    peers = Peers({NEAR: {ID}})
    worker = resyncer(peers, [NEAR, FAR], counted=True, stored=True)
    assert asyncio.run(worker.resync_block(ID)) is Action.OFFLOAD
    assert peers.received == [FAR]
    assert not worker.manager.store.contains(ID)


def test_offload_keeps_the_copy_while_a_holder_cannot_be_reached(resyncer):
    peers = Peers({NEAR: {ID}}, down={FAR})
    worker = resyncer(peers, [NEAR, FAR], counted=True, stored=True)
    with pytest.raises(OffloadIncomplete):
        asyncio.run(worker.resync_block(ID))
    assert worker.manager.store.contains(ID)


def test_a_file_nothing_counts_becomes_a_gc_candidate(resyncer):
    worker = resyncer(Peers({}), [ME, NEAR, FAR], counted=False, stored=True)
    assert asyncio.run(worker.resync_block(ID)) is Action.FORGET
    count, deletable_at = worker.manager.refcounts.entry(ID)
    assert count == 0 and deletable_at > 0


def test_an_entry_falling_due_while_the_dispatcher_looks_is_not_slept_past(resyncer, monkeypatch):
    """The dispatcher decides from one reading of the clock.

    It used to look for a due entry, then read the clock again for how long to
    sleep; an entry that fell due in between counted as "being worked on" and
    was slept past for a minute (a node that had left the layout kept its
    blocks that long). Here every reading of the clock is 5 ms later than the
    one before, and the entry falls due between the first two.
    """
    worker = resyncer(Peers({}), [ME, NEAR, FAR], counted=False, stored=True)
    start = now_ms()
    readings = itertools.count(start, 5)
    for module in (resync, resync_worker):
        monkeypatch.setattr(module, "now_ms", lambda: next(readings))

    async def main() -> None:
        await worker.queue.push([ID], due_ms=start + 3)
        stop = asyncio.Event()
        dispatcher = asyncio.ensure_future(worker.run(stop))
        try:
            async with asyncio.timeout(10):
                while worker.queue.length():
                    await asyncio.sleep(0.01)
        finally:
            stop.set()
            await dispatcher

    asyncio.run(main())
    count, deletable_at = worker.manager.refcounts.entry(ID)
    assert count == 0 and deletable_at > 0  # the entry was worked on: FORGET


def test_a_layout_change_tries_the_failing_blocks_again(tmp_path):
    """A backoff earned under the old layout (a holder down) does not outlast the change."""
    with block_managers(tmp_path) as make:
        manager = local_manager(make, Peers({}), [NEAR, FAR])
        healing = BlockHealing(manager, Workers(), layout_version=1)

        async def main() -> tuple[int, ResyncError]:
            for _ in range(7):
                backing_off = await manager.resync.failed(ID, "no answer from ffff")
            stop = asyncio.Event()
            walker = asyncio.ensure_future(healing._walk_when_asked(stop))
            healing.layout_changed(2)
            try:
                async with asyncio.timeout(10):
                    while manager.resync.error(ID) == backing_off:
                        await asyncio.sleep(0.01)
            finally:
                stop.set()
                await walker
            return backing_off.next_try_ms, manager.resync.error(ID)

        backed_off_until, error = asyncio.run(main())
        assert error.failures == 7  # the count is kept: a new failure backs off as long
        assert error.next_try_ms <= now_ms() + AUTOMATIC_WALK_DELAY_MS < backed_off_until
        assert error.next_try_ms in manager.resync.queued_at(ID)


@pytest.fixture
def released(tmp_path: Path):
    """A manager for a block stored here, counted once then released (due for GC at once)."""
    with block_managers(tmp_path) as make:

        def with_holders(peers: Peers, holders: list[bytes]):
            manager = local_manager(make, peers, holders, gc_grace_ms=0)
            manager.store.write(ID, DATA)
            manager.db.transaction(lambda tx: manager.refcounts.increment(tx, ID))
            manager.db.transaction(lambda tx: manager.refcounts.decrement(tx, ID))
            return manager

        yield with_holders


def test_gc_hands_a_copy_it_should_not_hold_to_a_holder_that_needs_it_first(released):
    """A node that handed a partition over lets its references go: count 0 is not garbage."""
    peers = Peers({NEAR: {ID}}, counting={NEAR, FAR})
    manager = released(peers, [NEAR, FAR])
    assert asyncio.run(manager.collect_garbage()) == 1
    assert peers.received == [FAR]
    assert not manager.store.contains(ID)


def test_gc_spreads_no_block_that_no_holder_counts(released):
    peers = Peers({}, counting=set())
    manager = released(peers, [NEAR, FAR])
    assert asyncio.run(manager.collect_garbage()) == 1
    assert peers.received == []
    assert not manager.store.contains(ID)


def test_gc_keeps_a_copy_it_should_not_hold_while_a_holder_cannot_be_asked(released):
    manager = released(Peers({}, down={FAR}), [NEAR, FAR])
    assert asyncio.run(manager.collect_garbage()) == 0
    assert manager.store.contains(ID)
    count, deletable_at = manager.refcounts.entry(ID)
    assert count == 0 and deletable_at >= now_ms() + 9_000  # tried again later
    assert manager.refcounts.next_due_ms() == deletable_at


def test_gc_of_a_block_this_node_holds_asks_nobody(released):
    peers = Peers({}, down={NEAR, FAR})
    manager = released(peers, [ME, NEAR, FAR])
    assert asyncio.run(manager.collect_garbage()) == 1
    assert not manager.store.contains(ID)
