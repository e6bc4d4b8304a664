"""Fetching a sequence of items ahead of one consumer, as far as its pace calls for.

A GET streams an object's blocks to a client. Fetching the next blocks while
the current one is written overlaps storage with the network, which a fast
reader needs; but every fetched block waits in memory until the reader takes
it, and a reader that stalls (a slow or hostile client) would keep them all.
`ReadAhead` fetches ahead only as far as the consumer's pace shows it useful:

- Each time the consumer comes back for an item not fetched yet (it is
  faster than the fetches), one more fetch is kept in flight, up to
  `max_ahead`.
- A consumer that keeps an item longer than `patience` seconds is held up by
  its client, which reads slower than storage delivers: the fetches ahead
  are let go (done again when it gets there) and its next item is fetched
  only when it asks for it; it gets read-ahead back once it returns within
  `patience` again. A stalled consumer thus keeps just the item it holds,
  whatever `max_ahead`, and a slow one waits for each fetch, which costs it
  little: the fetch is short next to the time it takes over an item.

Items are counted, never timed, except for that one timeout: the pace alone
cannot tell a consumer a little slower than storage (which needs the
read-ahead it has) from one that stopped.
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
    """Items 0 .. count-1 from `fetch(index)`, in order, to one consumer calling `next`.

    The first `warmup` items are fetched on demand: a consumer's pace says
    nothing yet while its output goes to buffers that take them all at once
    (a socket's send buffer, which Linux lets grow to 4 MiB, and the transport's).
    """

    def __init__(
        self,
        fetch: Callable[[int], Awaitable[T]],
        count: int,
        max_ahead: int,
        patience: float,
        warmup: int = 0,
    ) -> None:
        self._fetch = fetch
        self._count = count
        self._max_ahead = max(max_ahead, 1)
        self._patience = patience
        self._warmup = warmup
        self._ahead = 0
        self._taken = 0  # index of the item the next `next` returns
        self._launched = 0  # fetches of items [_taken, _launched) are in `_pending`
        self._pending: deque[asyncio.Future[T]] = deque()
        self._impatience: asyncio.TimerHandle | None = None
        self._held_up = False  # the consumer kept its last item longer than `patience`

    async def next(self) -> T:
        """The next item; fetches ahead of it as the consumer's pace calls for."""
        if self._taken >= self._count:
            raise IndexError("every item was taken")
        self._stop_impatience()
        if self._held_up:
            self._held_up = False  # this item is fetched on demand
        elif self._taken < self._warmup:
            pass  # the first items are fetched on demand
        elif not self._pending or not self._pending[0].done():  # the consumer has to wait
            self._ahead = min(self._ahead + 1, self._max_ahead)
        self._launch_through(self._taken + self._ahead)
        item = await self._pending[0]
        self._pending.popleft()
        self._taken += 1
        if self._taken < self._count:
            loop = asyncio.get_running_loop()
            self._impatience = loop.call_later(self._patience, self._consumer_held_up)
        return item

    def close(self) -> None:
        """Cancel the fetches in flight and let go of the fetched items."""
        self._stop_impatience()
        self._forget_pending()

    def _launch_through(self, last: int) -> None:
        while self._launched <= min(last, self._count - 1):
            self._pending.append(asyncio.ensure_future(self._fetch(self._launched)))
            self._launched += 1

    def _consumer_held_up(self) -> None:
        """The consumer holds its item too long: let the fetches ahead go."""
        self._impatience = None
        self._held_up = True
        self._ahead = 0
        self._forget_pending()

    def _forget_pending(self) -> None:
        while self._pending:
            _forget(self._pending.pop())
        self._launched = self._taken

    def _stop_impatience(self) -> None:
        if self._impatience is not None:
            self._impatience.cancel()
            self._impatience = None
