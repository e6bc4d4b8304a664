"""Bounded range reads: what one replica scans, and how the replicas' answers merge.

A replica scans the rows of a partition key in sort-key order from a start
key and stops at the first of: `limit` rows passing the read's filter,
`ScanBounds.rows` rows scanned, `ScanBounds.bytes` bytes of rows taken. It
returns every row it scanned, passing the filter or not, and its horizon:
the sort key of the last row scanned if it stopped early, or None if it read
to the end of the range. So no reply grows with the size of a partition.

Rows that fail the filter travel too because they are CRDT entries: a row
filtered out on one replica (a deletion) must still override an older copy
of the same row, which passes the filter, on another. Past a replica's
horizon that replica said nothing, so a row seen there only on the other
replicas may be stale; the merged answer is therefore cut at the smallest
horizon, and the next read continues just after it. Every replica that
stopped early scanned at least one row, so the horizon never lies before the
start key and each read moves forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from granary.table.schema import Entry

E = TypeVar("E", bound=Entry)

SCAN_ROWS = 1000
SCAN_BYTES = 1 << 20


@dataclass(frozen=True)
class ScanBounds:
    """The most one replica scans (rows) and returns (bytes of rows) for one range read."""

    rows: int = SCAN_ROWS
    bytes: int = SCAN_BYTES


@dataclass
class ReplicaScan(Generic[E]):
    """One replica's answer: the rows it scanned, in order, and where it stopped."""

    rows: list[E]
    horizon: bytes | None
    """The sort key of the last row scanned if the replica stopped early, else None."""


@dataclass
class RangePage(Generic[E]):
    """The rows of a range read passing its filter, and how far the read got."""

    entries: list[E]
    horizon: bytes | None
    """Every row up to this sort key (inclusive) was considered; None: up to the end."""

    @property
    def next_start(self) -> bytes | None:
        """Where the next read of the range starts (None: the range is exhausted)."""
        return None if self.horizon is None else self.horizon + b"\x00"


def scan_bounded(
    rows: Iterable[tuple[bytes, E]],
    sort_key: Callable[[E], bytes],
    keep: Callable[[E], bool],
    limit: int,
    bounds: ScanBounds,
) -> tuple[list[tuple[bytes, E]], bytes | None]:
    """Take (stored bytes, entry) rows until `limit` pass `keep` or a bound is hit.

    Returns the rows taken and the horizon (see `ReplicaScan`).
    """
    taken: list[tuple[bytes, E]] = []
    matches = size = 0
    for raw, entry in rows:
        taken.append((raw, entry))
        matches += keep(entry)
        size += len(raw)
        if matches >= limit or len(taken) >= bounds.rows or size >= bounds.bytes:
            return taken, sort_key(entry)
    return taken, None


def merge_scans(
    answers: list[ReplicaScan[E]],
    sort_key: Callable[[E], bytes],
    keep: Callable[[E], bool],
    limit: int,
) -> tuple[RangePage[E], list[E]]:
    """Merge the replicas' answers into one page of at most `limit` entries.

    Also returns the merged rows that some replica holds in an older state,
    for read repair.
    """
    merged: dict[bytes, E] = {}
    for answer in answers:
        for entry in answer.rows:
            key = sort_key(entry)
            merged[key] = entry if key not in merged else merged[key].merge(entry)
    horizons = [answer.horizon for answer in answers if answer.horizon is not None]
    horizon = min(horizons) if horizons else None
    kept = [
        merged[key]
        for key in sorted(merged)
        if (horizon is None or key <= horizon) and keep(merged[key])
    ]
    if len(kept) > limit:
        kept = kept[:limit]
        horizon = sort_key(kept[-1])
    stale = {
        sort_key(entry)
        for answer in answers
        for entry in answer.rows
        if entry != merged[sort_key(entry)]
    }
    return RangePage(kept, horizon), [merged[key] for key in stale]
