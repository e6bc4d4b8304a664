"""Local counters of a table's rows, per partition key, kept with the rows.

Each node keeps, for every partition key of a table it holds rows of, a few
sums over its own copy of those rows (for the object table: objects and
bytes per bucket). They are not replicated: each node counts its local
replica exactly, and a reader asks a partition's holders and takes the
largest figure (Garage's `index_counter` does the same).

Exact because every change of a local row changes the counters in the same
write transaction, by the difference between the row before and after:
- a merge (`Table.merge_in_tx` calls the schema's `updated` hook),
- a row dropped without a merge (the schema's `forgotten` hook): a tombstone
  collected by table/gc.py, a partition handed over by table/sync.py.
The schema's hooks call `changed`; nothing here reads the table otherwise.

Rows written before the counters existed (an older version's data, or a
counter tree deleted by hand) are counted once by `recount`, in bounded
batches of rows, each in its own transaction. Its progress is a cursor
stored beside the counters: the rows before the cursor are counted, and only
their changes move the counters; a row past the cursor is counted when the
recount reaches it, as it is then. The recount and every write are
transactions of one writer, so nothing is counted twice or missed, even
while S3 worker processes write. The cursor ends as `DONE`.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from granary.db.base import Tx
from granary.table.keys import storage_key
from granary.table.schema import Entry
from granary.table.table import Table

E = TypeVar("E", bound=Entry)
log = logging.getLogger("granary.table")

RECOUNT_BATCH = 500
"""Rows counted per transaction by the recount (a few ms of the writer's time)."""
DONE = b"\x01"
_CURSOR = b"\x00"
_STATE_KEY = b"recount"


class RowCounters(Generic[E]):
    """Sums of `measure(row)` per partition key over this node's rows of `table`."""

    def __init__(
        self,
        table: Table[E],
        fields: Sequence[str],
        measure: Callable[[E], tuple[int, ...]],
    ) -> None:
        self.table = table
        self.fields = tuple(fields)
        self.measure = measure
        self.zero = (0,) * len(self.fields)
        self._value = struct.Struct(">" + "q" * len(self.fields))
        self.tree = table.db.tree(f"{table.name}:counters")
        self.state = table.db.tree(f"{table.name}:counters_state")

    # ---- reading ------------------------------------------------------------

    def get(self, pk: bytes) -> tuple[int, ...]:
        raw = self.tree.get(pk)
        return self.zero if raw is None else self._value.unpack(raw)

    def items(self) -> Iterator[tuple[bytes, tuple[int, ...]]]:
        """(partition key, counts) of every partition key with counts, in key order."""
        for key, raw in self.tree.range():
            yield key, self._value.unpack(raw)

    def recounted(self) -> bool:
        return self.state.get(_STATE_KEY) == DONE

    # ---- keeping in step (inside the rows' transactions) -------------------

    def changed(self, tx: Tx, old: E | None, new: E | None) -> None:
        """A local row went from `old` to `new` (None: absent) in `tx`."""
        before = self.zero if old is None else self.measure(old)
        after = self.zero if new is None else self.measure(new)
        if before == after:
            return
        row = new if new is not None else old
        assert row is not None
        schema = self.table.schema
        pk = schema.partition_key(row)
        if not self._counted(tx, storage_key(pk, schema.sort_key(row))):
            return  # the recount has not reached it: it counts the row as it finds it
        self._add(tx, pk, tuple(a - b for a, b in zip(after, before, strict=True)))

    def _counted(self, tx: Tx, key: bytes) -> bool:
        state = tx.get(self.state, _STATE_KEY)
        if state == DONE:
            return True
        return state is not None and key < state[len(_CURSOR) :]

    def _add(self, tx: Tx, pk: bytes, delta: tuple[int, ...]) -> None:
        raw = tx.get(self.tree, pk)
        current = self.zero if raw is None else self._value.unpack(raw)
        total = tuple(a + b for a, b in zip(current, delta, strict=True))
        if total == self.zero:
            tx.delete(self.tree, pk)
        else:
            tx.put(self.tree, pk, self._value.pack(*total))

    # ---- the one-time recount -----------------------------------------------

    def recount_batch(self, tx: Tx, limit: int = RECOUNT_BATCH) -> bool:
        """Advance the recount by up to `limit` rows; True once it is done."""
        state = tx.get(self.state, _STATE_KEY)
        if state == DONE:
            return True
        if state is None:
            # A fresh start: whatever counts are here predate the cursor.
            stale = [key for key, _ in _first(tx.range(self.tree), limit)]
            for key in stale:
                tx.delete(self.tree, key)
            if len(stale) == limit:
                return False
            tx.put(self.state, _STATE_KEY, _CURSOR)
            return False
        cursor = state[len(_CURSOR) :]
        sums: dict[bytes, list[int]] = {}
        last = None
        rows = 0
        schema = self.table.schema
        for key, raw in _first(tx.range(self.table.tree, cursor or None), limit):
            row = self.table.decode(raw)
            counts = self.measure(row)
            if counts != self.zero:
                total = sums.setdefault(schema.partition_key(row), [0] * len(self.fields))
                for i, value in enumerate(counts):
                    total[i] += value
            last = key
            rows += 1
        for pk, total in sums.items():
            self._add(tx, pk, tuple(total))
        if rows < limit or last is None:
            tx.put(self.state, _STATE_KEY, DONE)
            return True
        tx.put(self.state, _STATE_KEY, _CURSOR + last + b"\x00")  # just past `last`
        return False

    async def recount(self, stop: asyncio.Event | None = None) -> bool:
        """Run the recount to its end (at once if it is done); False if stopped first."""
        if self.recounted():
            return True
        log.info("%s: counting the rows written before the counters existed", self.table.name)
        batches = 0
        while stop is None or not stop.is_set():
            batches += 1
            if await self.table.db.transact(self.recount_batch):
                log.info("%s: counters recounted (%d batches)", self.table.name, batches)
                return True
            await asyncio.sleep(0)  # let requests between two batches
        return False


def _first(items: Iterator[tuple[bytes, bytes]], limit: int) -> Iterator[tuple[bytes, bytes]]:
    for count, item in enumerate(items):
        if count >= limit:
            return
        yield item
