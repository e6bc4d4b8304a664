"""The one place where prefix, delimiter, start position and page size are applied.

Keys come from the object table in order, in batches. A delimiter folds
every key below a common prefix into that prefix, and the scan jumps past
the whole folded range instead of walking it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

BATCH = 1000

# fetch(start key (inclusive, UTF-8 bytes), limit) -> [(key, item)] in key order
Fetch = Callable[[bytes | None, int], Awaitable[list[tuple[str, T]]]]


@dataclass
class Page(Generic[T]):
    items: list[tuple[str, T]] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    last: str | None = None
    """The last key or common prefix returned: where the next page starts after."""

    @property
    def count(self) -> int:
        return len(self.items) + len(self.prefixes)


def after(key: str) -> bytes:
    """The smallest key that sorts after `key`."""
    return key.encode() + b"\x00"


def past_prefix(prefix: str) -> bytes | None:
    """The smallest key after every key that starts with `prefix` (None: no such key)."""
    raw = prefix.encode().rstrip(b"\xff")
    if not raw:
        return None
    return raw[:-1] + bytes([raw[-1] + 1])


async def list_page(
    fetch: Fetch[T],
    *,
    prefix: str,
    delimiter: str | None,
    marker: str | None,
    max_keys: int,
    batch_size: int = BATCH,
) -> Page[T]:
    """One page of up to `max_keys` keys and common prefixes after `marker`.

    A common prefix that does not sort after the marker was returned by an
    earlier page, so it is skipped rather than repeated. Keys are fetched
    `batch_size` at a time.
    """
    page: Page[T] = Page()
    start = after(marker) if marker is not None else b""
    position = max(start, prefix.encode()) or None
    marker_bytes = marker.encode() if marker is not None else None
    if max_keys <= 0:
        return page
    while True:
        # One row more than the page still needs tells whether it is truncated.
        wanted = min(batch_size, max_keys - page.count + 1)
        batch = await fetch(position, wanted)
        if not batch:
            return page
        jumped = False
        for key, item in batch:
            if not key.startswith(prefix):
                if key.encode() > prefix.encode():
                    return page
                continue
            if page.count >= max_keys:
                page.truncated = True
                return page
            folded = _common_prefix(key, prefix, delimiter)
            if folded is None:
                page.items.append((key, item))
                page.last = key
                continue
            if marker_bytes is None or folded.encode() > marker_bytes:
                page.prefixes.append(folded)
                page.last = folded
            position = past_prefix(folded)
            if position is None:
                return page
            jumped = True
            break
        if not jumped:
            if len(batch) < wanted:
                return page
            position = after(batch[-1][0])


def _common_prefix(key: str, prefix: str, delimiter: str | None) -> str | None:
    if not delimiter:
        return None
    index = key.find(delimiter, len(prefix))
    if index < 0:
        return None
    return key[: index + len(delimiter)]
