"""One authenticated connection to a peer: many calls in flight both ways.

A reader task decodes frames and never waits on anyone: requests start a
handler task, stream chunks go to bounded per-stream buffers, responses
resolve the caller's future. A writer task drains the priority queue into the
TLS transport, waiting on its backpressure (`drain`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import msgspec

from granary.net.errors import HANDLER_ERROR, STREAM_ERROR, CallTimeout, PeerUnavailable, RpcError
from granary.net.messages import (
    CHUNK_SIZE,
    HIGH,
    LENGTH_SIZE,
    MAX_FRAME_SIZE,
    Cancel,
    Chunk,
    Credit,
    End,
    Error,
    Request,
    Response,
    encode_frame,
    frame_decoder,
)
from granary.net.send_queue import SendQueue
from granary.net.streams import CreditGate, IncomingStream, StreamOverflow
from granary.telemetry import logs, tracing

log = logging.getLogger("granary.net")

Reply = tuple[bytes, AsyncIterator[bytes] | None]
# (from node, endpoint, body, request stream) -> (reply body, reply stream)
Dispatch = Callable[[bytes, str, bytes, AsyncIterator[bytes] | None], Awaitable[Reply]]


class ProtocolError(Exception):
    """The peer sent something the protocol does not allow."""


class Connection:
    """Calls to one peer, and the peer's calls to us, over one TLS stream."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        peer_id: bytes,
        dialer_id: bytes,
        dispatch: Dispatch,
        on_closed: Callable[[Connection], None],
    ) -> None:
        self.peer_id = peer_id
        self.dialer_id = dialer_id
        self.closed = False
        self._reader = reader
        self._writer = writer
        self._dispatch = dispatch
        self._on_closed = on_closed
        self._queue = SendQueue()
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        # Our calls to the peer, by our request id.
        self._calls: dict[int, asyncio.Future[Reply]] = {}
        self._request_pumps: dict[int, tuple[asyncio.Task[None], CreditGate]] = {}
        # Weak, so that a stream its reader dropped is finalized, which abandons it.
        self._reply_streams: weakref.WeakValueDictionary[int, IncomingStream] = (
            weakref.WeakValueDictionary()
        )
        # The peer's calls to us, by the peer's request id.
        self._serving: dict[int, asyncio.Task[None]] = {}
        self._request_streams: weakref.WeakValueDictionary[int, IncomingStream] = (
            weakref.WeakValueDictionary()
        )
        self._reply_gates: dict[int, CreditGate] = {}

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._read_loop()),
            asyncio.create_task(self._write_loop()),
        ]

    async def call(
        self,
        endpoint: str,
        body: bytes,
        priority: int,
        stream: AsyncIterator[bytes] | None,
        timeout: float,
        trace: str = "",
    ) -> Reply:
        """`trace`: the caller's W3C traceparent, empty for an untraced call."""
        if self.closed:
            raise PeerUnavailable(f"connection to {self.peer_id.hex()[:16]} is closed")
        call_id = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        self._send(Request(call_id, endpoint, priority, body, stream is not None, trace), priority)
        if stream is not None:
            gate = CreditGate()
            pump = asyncio.create_task(self._pump(call_id, False, stream, priority, gate))
            self._request_pumps[call_id] = (pump, gate)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise CallTimeout(
                f"{endpoint} on {self.peer_id.hex()[:16]}: no answer within {timeout}s"
            ) from None
        finally:
            self._end_call(call_id, priority)

    def close(self, reason: str) -> None:
        """Fail everything in flight with PeerUnavailable and drop the link."""
        if self.closed:
            return
        self.closed = True
        message = f"connection to {self.peer_id.hex()[:16]} lost: {reason}"
        for future in self._calls.values():
            if not future.done():
                future.set_exception(PeerUnavailable(message))
        for stream in (*self._reply_streams.values(), *self._request_streams.values()):
            stream.finish(PeerUnavailable(message))
        for task in (
            *self._serving.values(),
            *(pump for pump, _ in self._request_pumps.values()),
            *self._tasks,
        ):
            if task is not asyncio.current_task():
                task.cancel()
        self._calls.clear()
        self._reply_streams.clear()
        self._request_streams.clear()
        self._writer.close()
        self._on_closed(self)

    async def aclose(self) -> None:
        self.close("closed by this node")
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- sending

    def _send(self, message: msgspec.Struct, priority: int) -> None:
        if not self.closed:
            self._queue.put(encode_frame(message), priority)

    async def _write_loop(self) -> None:
        try:
            while True:
                batch = await self._queue.next_batch()
                self._writer.write(batch[0] if len(batch) == 1 else b"".join(batch))
                await self._writer.drain()
        except (OSError, ssl.SSLError) as exc:
            self.close(f"write failed: {exc!r}")

    async def _pump(
        self,
        call_id: int,
        reply: bool,
        stream: AsyncIterator[bytes],
        priority: int,
        gate: CreditGate,
    ) -> None:
        """Send a streamed body in chunks, each waiting for the receiver's credit."""
        try:
            async for data in stream:
                view = memoryview(data)
                for start in range(0, len(view), CHUNK_SIZE):
                    piece = view[start : start + CHUNK_SIZE]
                    await gate.take(len(piece))
                    # msgspec encodes any buffer as bytes: sent as a view, the
                    # piece is not copied (received, it is bytes).
                    self._send(Chunk(call_id, reply, cast(bytes, piece)), priority)
        except Exception as exc:
            self._send(End(call_id, reply, f"{type(exc).__name__}: {exc}"), priority)
        else:
            self._send(End(call_id, reply, None), priority)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    def _end_call(self, call_id: int, priority: int) -> None:
        entry = self._request_pumps.pop(call_id, None)
        if entry is not None:
            entry[0].cancel()
        if self._calls.pop(call_id, None) is not None:
            # Given up before the answer (timeout, cancellation): stop the handler.
            # Same priority as the request, so the Cancel cannot overtake it.
            self._send(Cancel(call_id), priority)

    # -- receiving

    async def _read_loop(self) -> None:
        reader = self._reader
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(LENGTH_SIZE), "big")
                if size > MAX_FRAME_SIZE:
                    raise ProtocolError(f"frame of {size} bytes, limit {MAX_FRAME_SIZE}")
                self._handle(frame_decoder.decode(await reader.readexactly(size)))
        except (EOFError, OSError, ssl.SSLError) as exc:
            self.close(f"{exc!r}")
        except (ProtocolError, StreamOverflow, msgspec.DecodeError) as exc:
            log.warning("protocol error from node %s: %s", self.peer_id.hex()[:16], exc)
            self.close(f"protocol error: {exc}")

    def _handle(self, frame: msgspec.Struct) -> None:
        match frame:
            case Request():
                self._on_request(frame)
            case Response():
                future = self._calls.pop(frame.id, None)
                if future is not None and not future.done():
                    stream = self._open_stream(frame.id, reply=True) if frame.streamed else None
                    future.set_result((frame.body, stream))
            case Error():
                future = self._calls.pop(frame.id, None)
                if future is not None and not future.done():
                    future.set_exception(RpcError(frame.code, frame.message))
            case Chunk():
                stream = self._streams(frame.reply).get(frame.id)
                if stream is not None:
                    stream.feed(frame.data)
            case End():
                stream = self._streams(frame.reply).pop(frame.id, None)
                if stream is not None:
                    error = None if frame.error is None else RpcError(STREAM_ERROR, frame.error)
                    stream.finish(error)
            case Credit():
                gate = self._gate(frame.id, frame.reply)
                if gate is not None:
                    gate.add(frame.amount)
            case Cancel():
                task = self._serving.get(frame.id)
                if task is not None:
                    task.cancel()

    def _streams(self, reply: bool) -> weakref.WeakValueDictionary[int, IncomingStream]:
        """Incoming streams: replies to our calls, or request bodies of the peer's."""
        return self._reply_streams if reply else self._request_streams

    def _gate(self, call_id: int, reply: bool) -> CreditGate | None:
        """Outgoing streams: our replies to the peer's calls, or our calls' bodies."""
        if reply:
            return self._reply_gates.get(call_id)
        entry = self._request_pumps.get(call_id)
        return entry[1] if entry is not None else None

    def _open_stream(self, call_id: int, *, reply: bool) -> IncomingStream:
        streams = self._streams(reply)

        def grant(amount: int) -> None:
            self._send(Credit(call_id, reply, amount), HIGH)

        def abandon() -> None:
            streams.pop(call_id, None)
            if reply:
                self._send(Cancel(call_id), HIGH)

        stream = IncomingStream(grant, abandon)
        streams[call_id] = stream
        return stream

    def _on_request(self, request: Request) -> None:
        if request.id in self._serving:
            raise ProtocolError(f"request id {request.id} reused while in flight")
        stream = self._open_stream(request.id, reply=False) if request.streamed else None
        self._serving[request.id] = asyncio.create_task(self._serve(request, stream))

    async def _serve(self, request: Request, stream: IncomingStream | None) -> None:
        if request.trace:
            with tracing.continued(request.trace, request.endpoint) as span:
                if span.recording:  # its log lines carry the trace's id, as the request's
                    logs.request_id.set(request.trace[3:35])
                    span.set("rpc.system", "granary")
                    span.set("granary.peer", self.peer_id.hex()[:16])
                await self._answer(request, stream, span)
        else:
            await self._answer(request, stream, tracing.NO_SPAN)

    async def _answer(
        self, request: Request, stream: IncomingStream | None, span: tracing.AnySpan
    ) -> None:
        call_id, priority = request.id, request.priority
        try:
            try:
                body, reply_stream = await self._dispatch(
                    self.peer_id, request.endpoint, request.body, stream
                )
            except RpcError as exc:
                span.fail(f"{exc.code}: {exc.message}")
                self._send(Error(call_id, exc.code, exc.message), priority)
                return
            except Exception as exc:
                span.fail(f"{type(exc).__name__}: {exc}")
                log.warning(
                    "handler for %s failed on a call from node %s",
                    request.endpoint,
                    self.peer_id.hex()[:16],
                    exc_info=True,
                )
                self._send(Error(call_id, HANDLER_ERROR, f"{type(exc).__name__}: {exc}"), priority)
                return
            self._send(Response(call_id, body, reply_stream is not None), priority)
            if reply_stream is not None:
                gate = self._reply_gates[call_id] = CreditGate()
                await self._pump(call_id, True, reply_stream, priority, gate)
        finally:
            self._serving.pop(call_id, None)
            self._reply_gates.pop(call_id, None)
            leftover = self._request_streams.pop(call_id, None)
            if leftover is not None:
                leftover.finish(RpcError(STREAM_ERROR, "the request was already answered"))
