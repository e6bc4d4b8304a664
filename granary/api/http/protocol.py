"""One HTTP/1.1 connection: parsing, dispatch in order, flow control and timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections import deque
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import cast

import httptools

from granary.api.http.body import Body, BodyError
from granary.api.http.types import (
    BodyCutOff,
    ErrorRenderer,
    Handler,
    HandlerExceptionHook,
    Headers,
    HttpLimits,
    Request,
    Response,
    join_fields,
)
from granary.api.http.wire import (
    CHUNKED_END,
    CONTINUE,
    default_error_response,
    default_exception_response,
    encode_error,
    frame_response,
)
from granary.util.file_region import FileRegion

log = logging.getLogger("granary.http")

SMALL_UNREAD_BODY = 64 * 1024
"""A handler may leave at most this much of a declared body unread and keep the connection."""

_WRITE_HIGH_WATER = 256 * 1024
_COALESCE_LIMIT = 64 * 1024
_WRITE_SLICE = 256 * 1024
"""The most of a response body chunk handed to the transport at once."""
_CRLF = b"\r\n"
_NAME_CACHE_SIZE = 512
_INF = float("inf")

# What the connection waits for, hence which timeout applies.
_NO_TIMEOUT = 0
_IDLE = 1  # between requests, nothing received
_HEAD = 2  # part of a request head received
_BODY = 3  # the handler waits for body bytes
_DRAIN = 4  # discarding the unread rest of a body after the response
_WRITE = 5  # a slow reader does not take the response
_LINGER = 6  # final response sent: discarding input until the client closes
_CLOSING = 7  # closed, flushing the last bytes to the client

_METHOD_LIKE = re.compile(rb"[\r\n]*[A-Z][A-Z0-9_-]* ")
_KNOWN_METHODS = {
    m.encode(): m for m in ("GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH")
}
_header_names: dict[bytes, str] = {}


class _HeadTooLarge(Exception):
    """Raised inside a parser callback to stop parsing an oversized head."""


@dataclass(slots=True)
class _ProtocolError:
    """A malformed request queued behind requests still being answered."""

    status: int
    code: str
    message: str


class ConnectionSettings:
    """What every connection of one server shares."""

    __slots__ = (
        "all_closed",
        "closing",
        "connections",
        "handler",
        "limits",
        "on_handler_exception",
        "render_error",
        "requests_started",
        "unproven_idle",
    )

    def __init__(
        self,
        handler: Handler,
        limits: HttpLimits,
        render_error: ErrorRenderer | None,
        on_handler_exception: HandlerExceptionHook | None,
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.render_error = render_error or default_error_response
        self.on_handler_exception = on_handler_exception or default_exception_response
        self.connections: set[HttpConnection] = set()
        self.unproven_idle: dict[HttpConnection, None] = {}
        """Connections serving no request that never had a successful response,
        oldest first: the ones replaced when the connection limit is reached."""
        self.requests_started = 0
        self.closing = False
        self.all_closed: asyncio.Event | None = None

    def admit(self, connection: HttpConnection) -> bool:
        """Count a new connection in; False if it must be closed (the limit is reached)."""
        limit = self.limits.max_connections
        if limit is not None and len(self.connections) >= limit:
            if not self.unproven_idle:
                return False
            oldest = next(iter(self.unproven_idle))
            self.forget(oldest)
            oldest.abort()
        self.connections.add(connection)
        self.unproven_idle[connection] = None
        return True

    def forget(self, connection: HttpConnection) -> None:
        self.connections.discard(connection)
        self.unproven_idle.pop(connection, None)
        if not self.connections and self.all_closed is not None:
            self.all_closed.set()


def _origin_path(path: str) -> str:
    """The path of an absolute-form target ("http://host/a" -> "/a"); other forms unchanged."""
    scheme_end = path.find("://")
    if scheme_end < 0:
        return path
    slash = path.find("/", scheme_end + 3)
    return path[slash:] if slash >= 0 else "/"


def _header_name(raw: bytes) -> str:
    """The lower-case name of a header field, remembered for the next requests."""
    name = raw.decode("latin-1").lower()
    if len(_header_names) < _NAME_CACHE_SIZE:
        _header_names[raw] = name
    return name


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _close_iterator(chunks: object) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            log.exception("closing a response body iterator failed")


class HttpConnection(asyncio.Protocol):
    """Serves the requests of one client connection, one at a time and in order.

    The parser runs as data arrives. A request is handed to the handler as soon
    as its head is complete, its body following through `Body`. Requests that
    arrive while one is being answered (pipelining) wait in a queue, and reading
    stops until that answer is written.
    """

    _transport: asyncio.Transport
    """Set by `connection_made`, which asyncio calls before any other method."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self._settings = settings
        self._limits = settings.limits
        self._max_head_size = settings.limits.max_header_bytes
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._client: tuple[str, int] = ("", 0)
        self._sendfile_socket: socket.socket | None = None  # set if file regions may be sent
        # The request being parsed.
        self._url = b""
        self._header_items: list[tuple[str, str]] = []
        self._head_size = 0
        self._head_wire = 0
        self._head_overflow = False
        self._framing_bytes = 0
        self._in_head = False
        self._messages_begun = 0
        self._message_keep_alive = True
        self._body_target: Body | None = None
        # Dispatch.
        self._queue: deque[tuple[Request, bool] | _ProtocolError] = deque()
        self._active = False
        self._task: asyncio.Task[None] | None = None
        self._parsing_stopped = False
        # Flow control and state.
        self._reading_paused = False
        self._pipeline_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._closed = False
        self._proven = False
        # Timeouts, checked by the server's periodic sweep.
        self._deadline = _INF
        self._timeout_kind = _NO_TIMEOUT

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Over TLS the bytes must go through the transport, which encrypts them.
        self._sendfile_socket = sock if transport.get_extra_info("ssl_object") is None else None
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._client = (peer[0], peer[1])
        if not self._settings.admit(self):
            self._closed = True
            self._parsing_stopped = True
            transport.abort()
            return
        transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        self._arm(_IDLE, self._head_timeout())
        if self._settings.closing:
            transport.close()

    def data_received(self, data: bytes) -> None:
        if self._timeout_kind == _IDLE:
            self._timeout_kind = _HEAD
            self._deadline = self._loop.time() + self._head_timeout()
        if self._parsing_stopped:
            return
        was_in_head = self._in_head
        body = self._body_target
        was_between_messages = not was_in_head and body is None
        received_before = -1 if body is None else body._received
        messages_before = self._messages_begun
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # What follows an upgrade request is not HTTP/1.1: answer it, then close.
            self._parsing_stopped = True
            return
        except httptools.HttpParserError as exc:
            # `data` starts with the failed message only if it was the only one begun in it.
            starts_here = was_between_messages and self._messages_begun == messages_before + 1
            self._on_parse_error(exc, data if starts_here else b"")
            return
        if was_in_head and self._in_head and self._messages_begun == messages_before:
            # A whole chunk inside one head: bounds a field that never ends.
            self._head_wire += len(data)
            if self._head_wire > self._max_head_size:
                self._on_head_too_large()
        elif body is not None and body is self._body_target and body.expected_length is None:
            # Chunked framing without body bytes (chunk extensions, trailers) is bounded too.
            if body._received != received_before:
                self._framing_bytes = 0
            else:
                self._framing_bytes += len(data)
                if self._framing_bytes > self._max_head_size:
                    self._parsing_stopped = True
                    self._fail_body_target(BodyError("incomplete"))

    def eof_received(self) -> bool:
        self._eof = True
        self._fail_body_target(BodyError("incomplete"))
        self._parsing_stopped = True
        # Keep the write side open to finish the answer in progress.
        return self._active

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._arm(_NO_TIMEOUT)
        self._fail_body_target(BodyError("incomplete"))
        self._queue.clear()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._settings.forget(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._messages_begun += 1
        self._url = b""
        self._header_items = []
        self._head_size = 0
        self._head_wire = 0
        self._framing_bytes = 0
        self._in_head = True
        if self._active and not self._pipeline_paused:
            self._pipeline_paused = True
            self._update_reading()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > self._max_head_size:
            self._head_overflow = True
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self._head_size + len(name) + len(value) + 4
        self._head_size = size
        if size > self._max_head_size:
            self._head_overflow = True
            raise _HeadTooLarge
        if not self._in_head:
            return  # a trailer after a chunked body: counted, not kept
        key = _header_names.get(name) or _header_name(name)
        text = value.decode("latin-1")
        if text[-1:] in " \t":
            text = text.rstrip(" \t")  # llhttp strips the whitespace before a value, not after
        self._header_items.append((key, text))

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        raw_method = parser.get_method()
        method = _KNOWN_METHODS.get(raw_method) or raw_method.decode("latin-1")
        target = self._url.decode("latin-1")
        path, _, query = target.partition("?")
        if path[:1] != "/":
            path = _origin_path(path)
        items = self._header_items
        joined = join_fields(items)
        version = parser.get_http_version()
        if "transfer-encoding" in joined:
            expected_length = None
        else:
            declared = joined.get("content-length")
            expected_length = 0 if declared is None else int(declared)
        expect = joined.get("expect")
        expect_continue = (
            expect is not None and expect.lower() == "100-continue" and version == "1.1"
        )
        body = Body(self, expected_length, expect_continue, self._limits.max_buffered_body)
        self._body_target = body
        self._settings.requests_started += 1
        keep_alive = parser.should_keep_alive()
        self._message_keep_alive = keep_alive
        request = Request(
            method,
            target,
            path,
            query,
            Headers(items, joined),
            version,
            self._client,
            body,
        )
        if self._active:
            self._queue.append((request, keep_alive))
        else:
            self._active = True
            self._settings.unproven_idle.pop(self, None)
            self._timeout_kind = _NO_TIMEOUT
            self._deadline = _INF
            self._task = self._loop.create_task(self._serve(request, keep_alive))

    def on_body(self, data: bytes) -> None:
        body = self._body_target
        if body is not None:
            body._feed(data)

    def on_message_complete(self) -> None:
        body = self._body_target
        if body is not None:
            self._body_target = None
            body._finish()
        if not self._message_keep_alive:
            self._parsing_stopped = True

    # Body source

    def send_continue(self) -> None:
        if not self._closed:
            self._transport.write(CONTINUE)

    def body_wait_started(self) -> None:
        self._arm(_BODY, self._limits.body_timeout)

    def body_wait_ended(self) -> None:
        if self._timeout_kind == _BODY:
            self._arm(_NO_TIMEOUT)

    def body_full(self) -> None:
        self._update_reading()

    def body_drained(self) -> None:
        self._update_reading()

    # Server side

    def check_timeout(self, now: float) -> None:
        """Act on an expired timeout; called by the server's periodic sweep."""
        if now < self._deadline or self._closed:
            return
        kind = self._timeout_kind
        self._arm(_NO_TIMEOUT)
        if kind == _HEAD and not self._active:
            self._reject(400, "RequestTimeout", "The request head was not received in time.")
        elif kind == _BODY:
            self._parsing_stopped = True
            self._fail_body_target(BodyError("timeout"))
        elif kind in (_WRITE, _CLOSING):
            self._transport.abort()
        else:
            self._close()

    def shutdown(self) -> None:
        """Close now if idle; otherwise after the response in progress."""
        if not self._active and not self._closed:
            self._close()

    def abort(self) -> None:
        """Close at once and cancel the request in progress."""
        if not self._closed:
            self._transport.abort()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    # Requests and responses

    async def _serve(self, request: Request, keep_alive: bool) -> None:
        handler = self._settings.handler
        try:
            item: tuple[Request, bool] | _ProtocolError = (request, keep_alive)
            while True:
                if isinstance(item, _ProtocolError):
                    self._write_error(item.status, item.code, item.message)
                    self._close_after_final_response(None)
                    return
                request, keep_alive = item
                try:
                    response = await handler(request)
                except Exception as exc:
                    response = self._exception_response(request, exc)
                else:
                    if not isinstance(response, Response):
                        error = TypeError(f"the handler returned {response!r}, not a Response")
                        response = self._exception_response(request, error)
                if not await self._respond(request, response, keep_alive):
                    return
                if not self._queue:
                    break
                item = self._queue.popleft()
                # Keep reading stopped only if yet another request has begun arriving.
                self._pipeline_paused = bool(self._queue) or self._in_head
                self._update_reading()
            self._active = False
            if self._pipeline_paused:
                self._pipeline_paused = False
                self._update_reading()
            if self._in_head:
                self._arm(_HEAD, self._head_timeout())
            else:
                self._timeout_kind = _IDLE
                idle_timeout = self._limits.keepalive_timeout
                if not self._proven:
                    idle_timeout = min(idle_timeout, self._limits.unproven_timeout)
                self._deadline = self._loop.time() + idle_timeout
            if self._settings.closing:
                self._close()  # the server began closing while this body was drained
        except Exception:
            log.exception("HTTP connection failed")
            self._transport.abort()
        finally:
            self._active = False
            if not self._proven and not self._closed:
                self._settings.unproven_idle[self] = None

    def _exception_response(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, BodyError):
            log.info("%s %s: %s", request.method, request.path, exc)
        else:
            log.error("%s %s failed", request.method, request.path, exc_info=exc)
        try:
            return self._settings.on_handler_exception(request, exc)
        except Exception:
            log.exception("on_handler_exception failed")
            return default_exception_response(request, exc)

    async def _respond(self, request: Request, response: Response, keep_alive: bool) -> bool:
        """Write one response; True when the connection may serve another request."""
        body = request.body
        if keep_alive and (
            self._settings.closing
            or (self._parsing_stopped and not self._queue)
            or not self._reusable_after(body)
        ):
            keep_alive = False
        try:
            head, send_body, length, chunked, keep_alive = frame_response(
                request, response, keep_alive
            )
        except (ValueError, TypeError) as exc:
            response = self._exception_response(request, exc)
            head, send_body, length, chunked, keep_alive = frame_response(
                request, response, keep_alive
            )
        payload = response.body
        if self._closed:
            await _close_iterator(payload)
            return False
        if response.status < 400:
            self._proven = True
        transport = self._transport
        if isinstance(payload, (bytes, bytearray, memoryview)):
            if not send_body or not payload:
                transport.write(head)
            elif len(payload) <= _COALESCE_LIMIT:
                transport.write(head + payload)
            else:
                transport.writelines((head, payload))
        elif not send_body:
            transport.write(head)
            await _close_iterator(payload)
        elif not await self._stream(head, payload, length, chunked):
            return False
        if self._write_paused and not await self._drain():
            return False
        if self._closed:
            return False
        if not keep_alive:
            self._close_after_final_response(body)
            return False
        if not body._complete:
            return await self._drain_request_body(body)
        return True

    @staticmethod
    def _reusable_after(body: Body) -> bool:
        """Whether the next request can be read once this response is written."""
        if body._complete:
            return True
        if body._error is not None or body._continue_was_skipped:
            return False
        remaining = body._remaining
        return remaining is not None and remaining <= SMALL_UNREAD_BODY

    async def _stream(
        self,
        head: bytes,
        chunks: AsyncIterable[bytes] | AsyncIterable[bytes | FileRegion],
        length: int | None,
        chunked: bool,
    ) -> bool:
        """Write an iterator body with flow control; abort on any inconsistency."""
        transport = self._transport
        sent = 0
        pending_head: bytes | None = head
        try:
            async for chunk in chunks:
                size = len(chunk)
                if not size:
                    continue
                sent += size
                if length is not None and sent > length:
                    log.error("response body longer than its Content-Length %d", length)
                    transport.abort()
                    return False
                if self._closed:
                    return False
                before: tuple[bytes, ...] = () if pending_head is None else (pending_head,)
                if chunked:
                    before = (*before, b"%x\r\n" % size)
                pending_head = None
                after = (_CRLF,) if chunked else ()
                if isinstance(chunk, FileRegion):
                    if not await self._send_region(before, chunk, after):
                        return False
                elif not await self._write_in_slices(before, chunk, after):
                    return False
                del chunk  # not kept while the next one is produced
        except BodyCutOff as reason:
            log.warning("response body cut off: %s", reason)
            transport.abort()
            return False
        except Exception:
            log.exception("response body iterator failed")
            transport.abort()
            return False
        finally:
            await _close_iterator(chunks)
        if length is not None and sent != length:
            log.error("response body of %d bytes, %d announced", sent, length)
            transport.abort()
            return False
        if self._closed:
            return False
        if pending_head is not None:
            transport.write(pending_head + CHUNKED_END if chunked else pending_head)
        elif chunked:
            transport.write(CHUNKED_END)
        return True

    async def _write_in_slices(
        self, before: tuple[bytes, ...], chunk: bytes, after: tuple[bytes, ...]
    ) -> bool:
        """Write `before`, `chunk` and `after`, waiting while the client does not read.

        The chunk goes to the transport a slice at a time, with a wait for the
        client between slices: the transport never holds much more than its
        high-water mark, however large the chunk (a block of an object is 1 MiB
        by default). Slices are views; a transport that copies what the socket
        does not take (asyncio's does, uvloop's keeps a reference) copies about
        one slice. False once the connection is gone.
        """
        transport = self._transport
        size = len(chunk)
        if size <= _WRITE_SLICE:
            transport.writelines((*before, chunk, *after))
        else:
            view = memoryview(chunk)
            for offset in range(0, size, _WRITE_SLICE):
                if offset and (self._closed or (self._write_paused and not await self._drain())):
                    return False
                piece = view[offset : offset + _WRITE_SLICE]
                last = offset + _WRITE_SLICE >= size
                transport.writelines((*before, piece, *after) if last else (*before, piece))
                before = ()
        return not self._write_paused or await self._drain()

    async def _send_region(
        self, before: tuple[bytes, ...], region: FileRegion, after: tuple[bytes, ...]
    ) -> bool:
        """Write `before`, the region straight from its file (`sendfile`), then `after`.

        The region bypasses the transport, so it goes only once the transport
        has sent all it holds (it has, but for a client already behind: that
        region is then read and written as bytes, as over TLS). The socket is
        used through a duplicate of its descriptor: a connection closed
        meanwhile frees its number, which a new file may get, and must not
        receive the rest.
        Sending runs on the loop, a socket buffer at a time: the region's
        pages were just read to verify them, so they are in the page cache.
        """
        transport = self._transport
        if before:
            transport.writelines(before)
        sock = self._sendfile_socket
        if sock is None or transport.get_write_buffer_size():
            return await self._write_in_slices((), region.read(), after)
        try:
            out = os.dup(sock.fileno())
        except OSError:  # the transport has let its socket go
            return False
        try:
            offset, end = region.offset, region.offset + region.length
            while offset < end:
                if self._closed:
                    return False
                try:
                    sent = os.sendfile(out, region.file.fd, offset, end - offset)
                except BlockingIOError:
                    if not await self._wait_writable(out):
                        return False
                    continue
                except OSError as exc:  # the client reset the connection
                    log.info("response body not sent: %s", exc)
                    transport.abort()
                    return False
                if sent == 0:
                    log.error("file ended at byte %d, inside its region (to byte %d)", offset, end)
                    transport.abort()
                    return False
                offset += sent
        finally:
            os.close(out)
        if after:
            transport.writelines(after)
        return not self._write_paused or await self._drain()

    async def _wait_writable(self, fd: int) -> bool:
        """Wait until the socket (`fd`, a duplicate of the transport's) takes more bytes;
        False once the connection is gone (a client stalled past the write timeout is
        disconnected by the timeout sweep)."""
        waiter = self._loop.create_future()
        self._drain_waiter = waiter
        self._loop.add_writer(fd, _resolve, waiter)
        self._arm(_WRITE, self._limits.write_timeout)
        try:
            await waiter
        finally:
            self._loop.remove_writer(fd)
            self._drain_waiter = None
        self._arm(_NO_TIMEOUT)
        return not self._closed

    async def _drain(self) -> bool:
        """Wait while a slow reader holds the write buffer; False once the connection is gone."""
        while self._write_paused and not self._closed:
            waiter = self._loop.create_future()
            self._drain_waiter = waiter
            self._arm(_WRITE, self._limits.write_timeout)
            try:
                await waiter
            finally:
                self._drain_waiter = None
        self._arm(_NO_TIMEOUT)
        return not self._closed

    async def _drain_request_body(self, body: Body) -> bool:
        """Discard the small unread rest of a body so that the next request can be read."""
        body._discard()
        self._arm(_DRAIN, self._limits.body_timeout)
        complete = await body._wait_complete()
        self._arm(_NO_TIMEOUT)
        return complete and not self._closed

    def _close_after_final_response(self, body: Body | None) -> None:
        """Close, first letting the client read the answer while its input is discarded.

        Closing with unread input makes the kernel reset the connection, which can
        destroy the response before the client reads it.
        """
        self._parsing_stopped = True
        self._fail_body_target(BodyError("incomplete"))
        if body is not None:
            body._discard()
        transport = self._transport
        if self._closed:
            return
        if self._eof or not transport.can_write_eof():
            self._close()
            return
        transport.write_eof()
        self._pipeline_paused = False
        self._update_reading()
        self._arm(_LINGER, self._limits.linger_timeout)

    # Errors found by the HTTP layer

    def _on_parse_error(self, exc: httptools.HttpParserError, message_start: bytes) -> None:
        if self._parsing_stopped:
            return  # e.g. bytes after a request that closes the connection
        if self._body_target is not None:
            # The head was fine and the handler has it; its body is malformed.
            self._parsing_stopped = True
            self._fail_body_target(BodyError("incomplete"))
            return
        if self._head_overflow:
            self._on_head_too_large()
        elif isinstance(exc, httptools.HttpParserInvalidMethodError) and _METHOD_LIKE.match(
            message_start
        ):
            self._fail_head(405, "MethodNotAllowed", "The method is not allowed.")
        else:
            if isinstance(exc, httptools.HttpParserCallbackError):
                log.error("HTTP parser callback failed", exc_info=exc.__context__)
            self._fail_head(400, "BadRequest", f"Malformed request: {exc}.")

    def _on_head_too_large(self) -> None:
        self._fail_head(
            431, "RequestHeaderSectionTooLarge", "The request line and headers are too large."
        )

    def _fail_head(self, status: int, code: str, message: str) -> None:
        self._parsing_stopped = True
        self._in_head = False
        if self._active:
            self._queue.append(_ProtocolError(status, code, message))
        else:
            self._reject(status, code, message)

    def _reject(self, status: int, code: str, message: str) -> None:
        self._write_error(status, code, message)
        self._close_after_final_response(None)

    def _write_error(self, status: int, code: str, message: str) -> None:
        try:
            data = encode_error(self._settings.render_error(status, code, message))
        except Exception:
            log.exception("render_error failed")
            data = encode_error(default_error_response(status, code, message))
        if not self._closed:
            self._transport.write(data)

    # Helpers

    def _close(self) -> None:
        """Close once buffered output is flushed, and abort if that takes too long."""
        self._transport.close()
        self._arm(_CLOSING, self._limits.write_timeout)

    def _fail_body_target(self, error: BodyError) -> None:
        body = self._body_target
        if body is not None:
            self._body_target = None
            body._fail(error)

    def _update_reading(self) -> None:
        body = self._body_target
        pause = self._pipeline_paused or (body is not None and body._full)
        if pause != self._reading_paused and not self._transport.is_closing():
            self._reading_paused = pause
            if pause:
                self._transport.pause_reading()
            else:
                self._transport.resume_reading()

    def _head_timeout(self) -> float:
        limits = self._limits
        if self._proven:
            return limits.header_timeout
        return min(limits.header_timeout, limits.unproven_timeout)

    def _arm(self, kind: int, delay: float | None = None) -> None:
        self._timeout_kind = kind
        self._deadline = _INF if delay is None else self._loop.time() + delay
