"""Block reference counts, kept in the metadata DB beside the block_ref rows.

Counts change inside the same transaction as the block_ref row that causes
them. A block whose count drops to zero becomes deletable only after a grace
delay: a reference may still be on its way (a copy, a retried upload), and
deleting too early would lose data. `changed` (set by the block manager)
is told of every count change inside the same transaction, which is how a
block gets queued for resync when its references appear or go.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterator

from granary.db.base import Db, Tx
from granary.util.time import now_ms

_VALUE = struct.Struct(">QQ")  # count, deletable-at (ms) when count is 0
MIN_POSTPONE_MS = 10_000


class RefCounts:
    def __init__(self, db: Db, grace_ms: int) -> None:
        self.grace_ms = grace_ms
        self.counts = db.tree("block:rc")
        self.gc_todo = db.tree("block:gc_todo")
        self.became_deletable = asyncio.Event()
        self.changed: Callable[[Tx, bytes], None] | None = None

    def get(self, block_id: bytes) -> int:
        raw = self.counts.get(block_id)
        return 0 if raw is None else _VALUE.unpack(raw)[0]

    def entry(self, block_id: bytes) -> tuple[int, int] | None:
        """(count, deletable-at ms) or None when this node has no count for the block."""
        raw = self.counts.get(block_id)
        return None if raw is None else _VALUE.unpack(raw)

    def counted(self, start: bytes | None = None) -> Iterator[tuple[bytes, int]]:
        """(block id, count) of every counted block, in id order from `start` on."""
        for key, raw in self.counts.range(start):
            yield key, _VALUE.unpack(raw)[0]

    def increment(self, tx: Tx, block_id: bytes) -> None:
        raw = tx.get(self.counts, block_id)
        count = 0 if raw is None else _VALUE.unpack(raw)[0]
        tx.put(self.counts, block_id, _VALUE.pack(count + 1, 0))
        self._notify(tx, block_id)

    def decrement(self, tx: Tx, block_id: bytes) -> None:
        raw = tx.get(self.counts, block_id)
        count = 0 if raw is None else _VALUE.unpack(raw)[0]
        self._notify(tx, block_id)
        if count > 1:
            tx.put(self.counts, block_id, _VALUE.pack(count - 1, 0))
            return
        self._mark_deletable(tx, block_id)

    def _notify(self, tx: Tx, block_id: bytes) -> None:
        if self.changed is not None:
            self.changed(tx, block_id)

    def _mark_deletable(self, tx: Tx, block_id: bytes, delay_ms: int | None = None) -> None:
        deletable_at = now_ms() + (self.grace_ms if delay_ms is None else delay_ms)
        tx.put(self.counts, block_id, _VALUE.pack(0, deletable_at))
        tx.put(self.gc_todo, struct.pack(">Q", deletable_at) + block_id, b"")
        tx.on_commit(self.became_deletable.set)

    def next_due_ms(self) -> int | None:
        """When the earliest pending deletion becomes due."""
        for key, _ in self.gc_todo.range():
            return struct.unpack(">Q", key[:8])[0]
        return None

    def schedule_check(self, tx: Tx, block_id: bytes) -> None:
        """Make an uncounted block a GC candidate unless something references it."""
        raw = tx.get(self.counts, block_id)
        if raw is not None and _VALUE.unpack(raw)[0] > 0:
            return
        self._mark_deletable(tx, block_id)

    def postpone(self, tx: Tx, todo_key: bytes, block_id: bytes) -> None:
        """Put a due deletion off by another grace delay (at least `MIN_POSTPONE_MS`)."""
        tx.delete(self.gc_todo, todo_key)
        raw = tx.get(self.counts, block_id)
        if raw is not None and _VALUE.unpack(raw)[0] == 0:
            self._mark_deletable(tx, block_id, max(self.grace_ms, MIN_POSTPONE_MS))

    def due_for_gc(self, limit: int) -> list[tuple[bytes, bytes]]:
        """(todo key, block id) pairs whose grace delay has passed."""
        end = struct.pack(">Q", now_ms() + 1)
        due = []
        for key, _ in self.gc_todo.range(None, end):
            due.append((key, key[8:]))
            if len(due) >= limit:
                break
        return due

    def is_deletable(self, block_id: bytes) -> bool:
        """Unreferenced, and past its grace delay."""
        raw = self.counts.get(block_id)
        if raw is None:
            return False
        count, deletable_at = _VALUE.unpack(raw)
        return count == 0 and deletable_at <= now_ms()

    def claim_for_deletion(self, tx: Tx, todo_key: bytes, block_id: bytes) -> bool:
        """Drop the todo item, and the count if the block is still unreferenced and due."""
        tx.delete(self.gc_todo, todo_key)
        raw = tx.get(self.counts, block_id)
        if raw is None:
            return False
        count, deletable_at = _VALUE.unpack(raw)
        if count > 0 or deletable_at > now_ms():
            return False
        tx.delete(self.counts, block_id)
        return True
