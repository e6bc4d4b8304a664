"""The one place where prefix, delimiter, start position and page size are applied.

Keys come from the object table in order, in bounded batches. A delimiter
folds every key below a common prefix into that prefix, and the scan jumps
past the whole folded range instead of walking it.

One page does a bounded amount of work: at most `max_fetches` table reads
(each bounded by rows scanned and bytes, see granary/table/scan.py). A page
that is not full by then (a long run of deleted keys) is answered truncated,
with fewer keys than asked, as S3 allows; its `last` is the furthest key
read, so the next page continues from there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from granary.table.keys import prefix_end

T = TypeVar("T")

BATCH = 1000
MAX_FETCHES = 10

# fetch(start key (inclusive, UTF-8 bytes), limit) ->
#   ([(key, item)] in key order, the key up to which the read got (None: the end))
Fetch = Callable[[bytes | None, int], Awaitable[tuple[list[tuple[str, T]], str | None]]]


@dataclass
class Page(Generic[T]):
    items: list[tuple[str, T]] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    last: str | None = None
    """Where the next page starts after: the last key or common prefix returned, or
    (with `cut`) the furthest key read."""
    cut: bool = False
    """Truncated by the work bound rather than by `max_keys`."""

    @property
    def count(self) -> int:
        return len(self.items) + len(self.prefixes)


def after(key: str) -> bytes:
    """The smallest key that sorts after `key`."""
    return key.encode() + b"\x00"


def past_prefix(prefix: str) -> bytes | None:
    """The smallest key after every key that starts with `prefix` (None: no such key)."""
    return prefix_end(prefix.encode())


async def list_page(
    fetch: Fetch[T],
    *,
    prefix: str,
    delimiter: str | None,
    marker: str | None,
    max_keys: int,
    batch_size: int = BATCH,
    max_fetches: int = MAX_FETCHES,
) -> Page[T]:
    """One page of up to `max_keys` keys and common prefixes after `marker`.

    A common prefix that does not sort after the marker was returned by an
    earlier page, so it is skipped rather than repeated. Keys are fetched
    `batch_size` at a time, at most `max_fetches` times, with one exception:
    a page never ends inside a common prefix it has not returned (the next
    page would take it as returned), so while the rows read since the
    marker all lie in such a prefix, its deleted keys are read on until a
    live one or its end.
    """
    page: Page[T] = Page()
    start = after(marker) if marker is not None else b""
    position = max(start, prefix.encode()) or None
    marker_bytes = marker.encode() if marker is not None else None
    if max_keys <= 0:
        return page
    returned = None
    if marker is not None and marker.startswith(prefix):
        returned = common_prefix(marker, prefix, delimiter)
    if returned is not None:
        # The marker lies in a common prefix an earlier page returned: skip it whole.
        position = past_prefix(returned)
        if position is None:
            return page
    resume = marker
    fetches = 0
    while True:
        if fetches >= max_fetches and resume != marker:
            page.truncated = page.cut = True
            page.last = resume
            return page
        # One row more than the page still needs tells whether it is truncated.
        wanted = min(batch_size, max_keys - page.count + 1)
        batch, reached = await fetch(position, wanted)
        fetches += 1
        jumped = False
        for key, item in batch:
            if not key.startswith(prefix):
                if key.encode() > prefix.encode():
                    return page
                continue
            if page.count >= max_keys:
                page.truncated = True
                return page
            folded = common_prefix(key, prefix, delimiter)
            if folded is None:
                page.items.append((key, item))
                page.last = resume = key
                continue
            if marker_bytes is None or folded.encode() > marker_bytes:
                page.prefixes.append(folded)
                page.last = folded
            resume = folded
            position = past_prefix(folded)
            if position is None:
                return page
            jumped = True
            break
        if jumped:
            continue
        if reached is None or (
            not reached.startswith(prefix) and reached.encode() > prefix.encode()
        ):
            return page
        folded = common_prefix(reached, prefix, delimiter)
        if folded is None or (marker_bytes is not None and folded.encode() <= marker_bytes):
            resume = reached
        position = after(reached)


def common_prefix(key: str, prefix: str, delimiter: str | None) -> str | None:
    if not delimiter:
        return None
    index = key.find(delimiter, len(prefix))
    if index < 0:
        return None
    return key[: index + len(delimiter)]
