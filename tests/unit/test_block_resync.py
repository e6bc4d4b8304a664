"""The resync decisions, the persistent queue with its backoff, and the refcount hook."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from granary.block.refcount import RefCounts
from granary.block.resync import Action, ResyncQueue, backoff_ms, decide
from granary.db import open_db
from granary.util.time import now_ms

A = b"\xaa" * 32
B = b"\xbb" * 32


@pytest.mark.parametrize(
    ("should_hold", "refcount", "present", "action"),
    [
        (True, 1, False, Action.FETCH),
        (True, 1, True, Action.NOTHING),
        (False, 2, True, Action.OFFLOAD),
        (False, 2, False, Action.NOTHING),
        # Released references: the GC deletes the file after its grace delay.
        (True, 0, True, Action.NOTHING),
        (False, 0, True, Action.NOTHING),
        (True, 0, False, Action.NOTHING),
        # A file nothing counts (a block_ref never arrived): a GC candidate.
        (True, None, True, Action.FORGET),
        (False, None, True, Action.FORGET),
        (True, None, False, Action.NOTHING),
    ],
)
def test_decide(should_hold, refcount, present, action):
    assert decide(should_hold=should_hold, refcount=refcount, present=present) is action


def test_backoff_doubles_up_to_64_times_the_base():
    assert [backoff_ms(1000, n) for n in (1, 2, 3, 7, 8, 50)] == [
        1000,
        2000,
        4000,
        64000,
        64000,
        64000,
    ]


@pytest.fixture
def db(tmp_path: Path):
    database = open_db("sqlite", tmp_path / "meta", fsync=False)
    yield database
    database.close()


def test_queue_order_busy_blocks_and_done(db):
    async def main():
        queue = ResyncQueue(db, retry_base_ms=1000)
        await queue.push([B, A])
        await queue.push([A], due_ms=2**60)  # far in the future: not due
        assert queue.length() == 3
        first = queue.first_free(set())
        assert first is not None and first.block_id == A  # same due time: id order
        second = queue.first_free({A})
        assert second is not None and second.block_id == B
        assert second.due_ms == first.due_ms <= now_ms()
        assert queue.first_free({A, B}) is None  # the later entry is A's too
        await queue.done(first.key)
        await queue.done(second.key)
        assert queue.length() == 1
        assert queue.queued_at(A) == [2**60]
        later = queue.first_free(set())
        assert later is not None and (later.block_id, later.due_ms) == (A, 2**60)

    asyncio.run(main())


def test_failures_back_off_and_a_retry_brings_them_forward(db):
    async def main():
        queue = ResyncQueue(db, retry_base_ms=60_000)
        first = await queue.failed(A, "no holder answered")
        second = await queue.failed(A, "still nothing")
        assert (first.failures, second.failures) == (1, 2)
        assert second.next_try_ms - second.last_try_ms == 120_000
        assert queue.postponed(A)
        assert queue.first_free(set()).due_ms > now_ms()  # both retries are in the future
        assert [(b, e.message) for b, e in queue.list_errors()] == [(A, "still nothing")]
        assert await queue.retry() == 1
        assert not queue.postponed(A)
        due = queue.first_free(set())
        assert due is not None and due.block_id == A and due.due_ms <= now_ms()
        assert queue.error(A).failures == 2  # the backoff is kept
        await queue.succeeded(A)
        assert queue.error(A) is None

    asyncio.run(main())


def test_reference_changes_queue_the_block(db):
    async def main():
        queue = ResyncQueue(db, retry_base_ms=1000)
        counts = RefCounts(db, grace_ms=0)
        dues = itertools.count()
        counts.changed = lambda tx, block_id: queue.queue_in_tx(tx, block_id, next(dues))
        await db.transact(lambda tx: counts.increment(tx, A))
        await db.transact(lambda tx: counts.decrement(tx, A))
        await db.transact(lambda tx: counts.schedule_check(tx, B))
        assert queue.queued_at(A) == [0, 1]
        assert queue.queued_at(B) == []
        assert counts.entry(A)[0] == 0
        assert counts.entry(b"\x01" * 32) is None

    asyncio.run(main())
