"""Both ends of a streamed body, with per-stream credit-based flow control."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from granary.net.messages import STREAM_WINDOW

# Grant credit back in quarters of the window, so the sender never runs dry
# while a grant is on its way and credits stay few.
GRANT_STEP = STREAM_WINDOW // 4


class StreamOverflow(Exception):
    """The sender went past the credit it was given."""


class IncomingStream:
    """An async iterator over the chunks of a body a peer streams to us.

    The connection's reader feeds it without ever waiting; the sender's
    credit bounds what can pile up here to STREAM_WINDOW bytes. Consuming
    chunks grants credit back through `grant`. Dropping or closing an
    unfinished stream calls `abandon`, so the sender stops.
    """

    def __init__(self, grant: Callable[[int], None], abandon: Callable[[], None]) -> None:
        self._grant = grant
        self._abandon: Callable[[], None] | None = abandon
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._ungranted = 0
        self._finished = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def __aiter__(self) -> IncomingStream:
        return self

    async def __anext__(self) -> bytes:
        while not self._chunks:
            if self._finished:
                self._abandon = None
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._chunks.popleft()
        self._buffered -= len(data)
        self._ungranted += len(data)
        if self._ungranted >= GRANT_STEP and not self._finished:
            self._grant(self._ungranted)
            self._ungranted = 0
        return data

    async def aclose(self) -> None:
        """Stop reading: the rest of the stream is discarded at its source."""
        self._drop()

    def feed(self, data: bytes) -> None:
        if self._finished:
            return
        self._buffered += len(data)
        if self._buffered > STREAM_WINDOW:
            raise StreamOverflow(f"{self._buffered} bytes buffered, window {STREAM_WINDOW}")
        self._chunks.append(data)
        self._wake()

    def finish(self, error: BaseException | None = None) -> None:
        """The stream ended; `error` (if any) is raised once the chunks are read."""
        if self._finished:
            return
        self._finished = True
        self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _drop(self) -> None:
        abandon, self._abandon = self._abandon, None
        self._chunks.clear()
        self._finished = True
        if abandon is not None:
            abandon()

    def __del__(self) -> None:
        if self._abandon is not None:
            self._drop()


class CreditGate:
    """The sender's side: how many bytes the receiver can still take."""

    def __init__(self) -> None:
        self._credit = STREAM_WINDOW
        self._event = asyncio.Event()

    def add(self, amount: int) -> None:
        # Capped: a peer granting more than the window cannot make us buffer more.
        self._credit = min(self._credit + amount, STREAM_WINDOW)
        self._event.set()

    async def take(self, amount: int) -> None:
        while self._credit < amount:
            self._event.clear()
            await self._event.wait()
        self._credit -= amount
