"""Fetching a sequence of items ahead of one consumer, as far as its pace calls for.

A GET streams an object's blocks to a client. Fetching the next blocks while
the current one is written overlaps storage with the network, which a fast
reader needs; but every fetched block waits in memory until the reader takes
it, and a reader that stalls (a slow or hostile client) would keep them all.
`ReadAhead` fetches ahead only as far as the consumer's pace shows it useful:

- A consumer that comes back for an item not fetched yet is faster than the
  fetches: one more fetch is kept in flight meanwhile, up to `max_ahead`.
- A consumer that comes back to an item already fetched is the slower side:
  one fetch ahead is enough to keep it busy.
- While the consumer holds an item, at most one fetched item waits for it:
  when a second one completes, the items beyond the next one are let go
  (fetched again when the consumer gets there) and read-ahead falls back to
  one. A stalled consumer thus keeps the item it holds and one more, whatever
  `max_ahead` is, at the cost of one repeated fetch each time a consumer
  turns slow.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def _forget(fetch: asyncio.Future[T]) -> None:
    """Drop a fetch: cancel it if it is running, retrieve its failure if it failed."""
    if not fetch.done():
        fetch.cancel()
    elif not fetch.cancelled():
        fetch.exception()  # an error of a fetch nobody waits for is no error


class ReadAhead(Generic[T]):
    """Items 0 .. count-1 from `fetch(index)`, in order, to one consumer calling `next`."""

    def __init__(self, fetch: Callable[[int], Awaitable[T]], count: int, max_ahead: int) -> None:
        self._fetch = fetch
        self._count = count
        self._max_ahead = max(max_ahead, 1)
        self._ahead = 0
        self._taken = 0  # index of the item the next `next` returns
        self._launched = 0  # fetches of items [_taken, _launched) are in `_pending`
        self._pending: deque[asyncio.Future[T]] = deque()
        self._holding = False  # the consumer has an item and has not come back yet

    @property
    def ahead(self) -> int:
        """How many items are fetched beyond the one the consumer waits for or holds."""
        return self._ahead

    async def next(self) -> T:
        """The next item; fetches ahead of it as the consumer's pace calls for."""
        if self._taken >= self._count:
            raise IndexError("every item was taken")
        self._holding = False
        consumer_waits = not self._pending or not self._pending[0].done()
        self._ahead = min(self._ahead + 1, self._max_ahead) if consumer_waits else 1
        self._launch_through(self._taken + self._ahead)
        fetch = self._pending[0]
        item = await fetch
        self._pending.popleft()
        self._taken += 1
        self._holding = True
        self._release_surplus()
        return item

    def close(self) -> None:
        """Cancel the fetches in flight and let go of the fetched items."""
        self._holding = False
        while self._pending:
            _forget(self._pending.popleft())
        self._launched = self._taken

    def _launch_through(self, last: int) -> None:
        while self._launched <= min(last, self._count - 1):
            fetch = asyncio.ensure_future(self._fetch(self._launched))
            fetch.add_done_callback(self._fetched)
            self._pending.append(fetch)
            self._launched += 1

    def _fetched(self, _fetch: asyncio.Future[T]) -> None:
        self._release_surplus()

    def _release_surplus(self) -> None:
        """While the consumer holds an item, keep at most one fetched item waiting."""
        if not self._holding or sum(1 for fetch in self._pending if fetch.done()) < 2:
            return
        while len(self._pending) > 1:
            _forget(self._pending.pop())
        self._launched = self._taken + 1
        self._ahead = 1
