"""The resync queue: which blocks to check and when, and the ones that keep failing.

Both live in the metadata DB, so a restart loses nothing:
- `block:resync_queue`: due time (ms, 8 bytes big-endian) + block id. A block
  may be queued more than once; checking it twice is harmless.
- `block:resync_errors`: block id -> `ResyncError`. A failed block is queued
  again at its next try, base x 2^(failures - 1) later (at most base x 64);
  until then its other queue entries are skipped.

What a check does with one block is decided by `decide`, a pure function.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import NamedTuple

import msgspec

from granary.db.base import Db, Tx
from granary.util.time import now_ms

MAX_BACKOFF_DOUBLINGS = 6
_DUE = struct.Struct(">Q")
PUSH_BATCH = 1000


class Action(StrEnum):
    NOTHING = "nothing"
    FETCH = "fetch"
    """This node should hold the block and lacks it: get it from another holder."""
    OFFLOAD = "offload"
    """This node holds a block it should not: hand it to its holders, then drop it."""
    FORGET = "forget"
    """A block file nothing counts: make it a GC candidate (deleted after the grace delay)."""


def decide(*, should_hold: bool, refcount: int | None, present: bool) -> Action:
    """What to do with a block, given the layout, its local count and the disk.

    `refcount` is None when this node has no count at all for the block;
    0 when its references were all released (the GC deletes it in time).
    """
    if refcount is None:
        return Action.FORGET if present else Action.NOTHING
    if refcount == 0:
        return Action.NOTHING
    if should_hold:
        return Action.NOTHING if present else Action.FETCH
    return Action.OFFLOAD if present else Action.NOTHING


def backoff_ms(base_ms: int, failures: int) -> int:
    return base_ms * 2 ** min(max(failures - 1, 0), MAX_BACKOFF_DOUBLINGS)


class QueueEntry(NamedTuple):
    due_ms: int
    key: bytes
    block_id: bytes


class ResyncError(msgspec.Struct, array_like=True, frozen=True):
    failures: int
    last_try_ms: int
    next_try_ms: int
    message: str


_encode_error = msgspec.msgpack.Encoder().encode
_decode_error = msgspec.msgpack.Decoder(ResyncError).decode


class ResyncQueue:
    def __init__(self, db: Db, retry_base_ms: int) -> None:
        self.db = db
        self.retry_base_ms = retry_base_ms
        self.queue = db.tree("block:resync_queue")
        self.errors = db.tree("block:resync_errors")
        self.wakeup = asyncio.Event()

    # ---- queueing ---------------------------------------------------------

    def queue_in_tx(self, tx: Tx, block_id: bytes, due_ms: int) -> None:
        tx.put(self.queue, _DUE.pack(due_ms) + block_id, b"")
        tx.on_commit(self.wakeup.set)

    async def push(self, block_ids: Iterable[bytes], due_ms: int | None = None) -> int:
        """Queue blocks (now by default), a batch per transaction; return how many."""
        due = now_ms() if due_ms is None else due_ms
        count = 0
        batch: list[bytes] = []
        for block_id in block_ids:
            batch.append(block_id)
            if len(batch) >= PUSH_BATCH:
                count += await self._push_batch(batch, due)
                batch = []
        if batch:
            count += await self._push_batch(batch, due)
        return count

    async def _push_batch(self, batch: list[bytes], due: int) -> int:
        def put_all(tx: Tx) -> None:
            for block_id in batch:
                self.queue_in_tx(tx, block_id, due)

        await self.db.transact(put_all)
        return len(batch)

    def length(self) -> int:
        return self.queue.count()

    def next_due_ms(self) -> int | None:
        """When the earliest queued check is due (None: nothing queued)."""
        for key, _ in self.queue.range():
            return _DUE.unpack(key[: _DUE.size])[0]
        return None

    def first_free(self, busy: set[bytes]) -> QueueEntry | None:
        """The earliest entry whose block is not in `busy`, due or not.

        The caller compares its due time with the clock once: looking for a
        due entry and then, separately, for the time to sleep reads the clock
        twice, and an entry falling due in between was slept past.
        """
        for key, _ in self.queue.range():
            block_id = key[_DUE.size :]
            if block_id not in busy:
                return QueueEntry(_DUE.unpack(key[: _DUE.size])[0], key, block_id)
        return None

    async def done(self, key: bytes) -> None:
        await self.db.transact(lambda tx: tx.delete(self.queue, key))

    def queued_at(self, block_id: bytes) -> list[int]:
        """When a block is queued (a full scan: for `block info` only)."""
        return [
            _DUE.unpack(key[: _DUE.size])[0]
            for key, _ in self.queue.range()
            if key[_DUE.size :] == block_id
        ]

    # ---- errors -----------------------------------------------------------

    def error(self, block_id: bytes) -> ResyncError | None:
        raw = self.errors.get(block_id)
        return None if raw is None else _decode_error(raw)

    def list_errors(self) -> Iterator[tuple[bytes, ResyncError]]:
        for key, raw in self.errors.range():
            yield key, _decode_error(raw)

    def postponed(self, block_id: bytes) -> bool:
        """A failing block whose next try is later: its queue entries wait for it."""
        error = self.error(block_id)
        return error is not None and error.next_try_ms > now_ms()

    async def failed(self, block_id: bytes, message: str) -> ResyncError:
        """Count a failure and queue the next try after the backoff."""

        def record(tx: Tx) -> ResyncError:
            raw = tx.get(self.errors, block_id)
            failures = 1 if raw is None else _decode_error(raw).failures + 1
            now = now_ms()
            error = ResyncError(
                failures, now, now + backoff_ms(self.retry_base_ms, failures), message
            )
            tx.put(self.errors, block_id, _encode_error(error))
            self.queue_in_tx(tx, block_id, error.next_try_ms)
            return error

        return await self.db.transact(record)

    async def succeeded(self, block_id: bytes) -> None:
        if self.errors.get(block_id) is not None:
            await self.db.transact(lambda tx: tx.delete(self.errors, block_id))

    async def retry(
        self, block_ids: Iterable[bytes] | None = None, *, at_ms: int | None = None
    ) -> int:
        """Try these blocks (every failing block when None) now or at `at_ms`.

        Their failure counts are kept, so a block that fails again backs off
        as long as it would have.
        """
        wanted = [key for key, _ in self.errors.range()] if block_ids is None else list(block_ids)

        def bring_forward(tx: Tx) -> None:
            now = now_ms() if at_ms is None else at_ms
            for block_id in wanted:
                raw = tx.get(self.errors, block_id)
                if raw is not None:
                    error = _decode_error(raw)
                    tx.put(
                        self.errors,
                        block_id,
                        _encode_error(msgspec.structs.replace(error, next_try_ms=now)),
                    )
                self.queue_in_tx(tx, block_id, now)

        await self.db.transact(bring_forward)
        return len(wanted)
