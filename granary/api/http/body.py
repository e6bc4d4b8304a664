"""A request body streamed to the handler with backpressure."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Literal, Protocol

BodyErrorReason = Literal["incomplete", "timeout"]


class BodyError(Exception):
    """The request body could not be read to its end.

    `reason` is "incomplete" when the client closed the connection or sent a
    malformed body, "timeout" when it stalled longer than the body timeout.
    """

    def __init__(self, reason: BodyErrorReason) -> None:
        super().__init__(f"request body {reason}")
        self.reason = reason


class BodySource(Protocol):
    """What a body needs from the connection that feeds it."""

    def send_continue(self) -> None: ...

    def body_wait_started(self) -> None: ...

    def body_wait_ended(self) -> None: ...

    def body_full(self) -> None: ...

    def body_drained(self) -> None: ...


class Body:
    """The body of one request, as it arrives.

    The connection feeds it; once more than `limit` bytes are unread it asks the
    connection to stop reading, and to resume once the handler read half of them.
    """

    __slots__ = (
        "_chunks",
        "_complete",
        "_continue_pending",
        "_discarding",
        "_error",
        "_full",
        "_limit",
        "_offset",
        "_received",
        "_source",
        "_unread",
        "_waiter",
        "expected_length",
        "peak_buffered",
    )

    def __init__(
        self,
        source: BodySource,
        expected_length: int | None,
        expect_continue: bool,
        limit: int,
    ) -> None:
        self.expected_length = expected_length
        """The declared Content-Length; None for a chunked body."""
        self.peak_buffered = 0
        """The most unread bytes this body ever held."""
        self._source = source
        self._limit = limit
        self._continue_pending = expect_continue
        self._chunks: deque[bytes] = deque()
        self._offset = 0
        self._unread = 0
        self._received = 0
        self._complete = False
        self._full = False
        self._discarding = False
        self._error: BodyError | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def consumed(self) -> bool:
        """True once the whole body was received and read."""
        return self._complete and not self._chunks

    @property
    def received(self) -> int:
        """How many body bytes arrived so far."""
        return self._received

    @property
    def buffered(self) -> int:
        """How many body bytes arrived and are not read yet."""
        return self._unread

    async def read(self, max_bytes: int = 1 << 20) -> bytes:
        """The next body bytes, at most `max_bytes` and at least one; b"" at the end.

        The first call invites the body with "100 Continue" if the client asked
        for it. Raises BodyError if the body cannot be read to its end.
        """
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if self._continue_pending:
            # Sent even for an empty body: a client given a final answer
            # without it may misread the next response on the connection.
            self._continue_pending = False
            if self._error is None:
                self._source.send_continue()
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._complete:
                return b""
            await self._wait_for_data()
        return self._take(max_bytes)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while data := await self.read():
            yield data

    def _take(self, max_bytes: int) -> bytes:
        chunks = self._chunks
        first = chunks[0]
        offset = self._offset
        available = len(first) - offset
        if available > max_bytes:
            data = first[offset : offset + max_bytes]
            self._offset = offset + max_bytes
        else:
            chunks.popleft()
            self._offset = 0
            data = first[offset:] if offset else first
        self._unread -= len(data)
        if self._full and self._unread <= self._limit // 2:
            self._full = False
            self._source.body_drained()
        return data

    async def _wait_for_data(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        self._source.body_wait_started()
        try:
            await self._waiter
        finally:
            self._waiter = None
            self._source.body_wait_ended()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # The connection's side.

    @property
    def _continue_was_skipped(self) -> bool:
        """The client waited for a "100 Continue" that was never sent.

        Its body may or may not come, and some clients (botocore) misread the
        next response on a connection where that happened, so it is closed.
        """
        return self._continue_pending

    @property
    def _remaining(self) -> int | None:
        """Declared bytes not received yet; None when unknown (chunked)."""
        if self.expected_length is None:
            return None
        return self.expected_length - self._received

    def _feed(self, data: bytes) -> None:
        size = len(data)
        self._received += size
        if self._discarding:
            return
        self._chunks.append(data)
        unread = self._unread + size
        self._unread = unread
        if unread > self.peak_buffered:
            self.peak_buffered = unread
        if unread > self._limit and not self._full:
            self._full = True
            self._source.body_full()
        self._wake()

    def _finish(self) -> None:
        self._complete = True
        self._wake()

    def _fail(self, error: BodyError) -> None:
        if not self._complete and self._error is None:
            self._error = error
        self._wake()

    def _discard(self) -> None:
        """Drop unread bytes now and ignore the rest as it arrives."""
        self._discarding = True
        self._chunks.clear()
        self._offset = 0
        self._unread = 0
        if self._full:
            self._full = False
            self._source.body_drained()

    async def _wait_complete(self) -> bool:
        """Wait for the end of a discarded body; False if it will never come."""
        while not self._complete:
            if self._error is not None:
                return False
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return True
