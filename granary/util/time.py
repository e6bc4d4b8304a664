"""Timestamps for CRDT entries.

A row's new version must carry a timestamp strictly greater than the one it
replaces, even when the wall clock stepped back or another node's clock runs
ahead: `next_timestamp` enforces that.
"""

from __future__ import annotations

import time

_offset_ms = 0


def set_clock_offset(offset_ms: int) -> None:
    """Shift this process's clock (config `clock_offset_ms`), to test clock skew."""
    global _offset_ms
    _offset_ms = offset_ms


def now_ms() -> int:
    """Wall-clock time in milliseconds since the epoch (plus any configured offset)."""
    return time.time_ns() // 1_000_000 + _offset_ms


def next_timestamp(previous: int | None, now: int | None = None) -> int:
    """A timestamp greater than `previous` and not behind the clock."""
    current = now_ms() if now is None else now
    if previous is None:
        return current
    return max(current, previous + 1)
