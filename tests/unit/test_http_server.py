"""The HTTP/1.1 server over real sockets on 127.0.0.1, under asyncio and uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import uvloop

from granary.api.http import (
    BodyError,
    HttpLimits,
    HttpServer,
    Request,
    Response,
)
from granary.util.file_region import FileRegion, OpenFile

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
MiB = 1 << 20


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Callable[[], Awaitable[None]]], None]:
    """Run a test coroutine on each loop; any error the loop reports fails the test."""

    def runner(test: Callable[[], Awaitable[None]]) -> None:
        errors: list[dict] = []

        def new_loop() -> asyncio.AbstractEventLoop:
            loop = LOOPS[request.param]()
            loop.set_exception_handler(lambda _loop, context: errors.append(context))
            return loop

        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(asyncio.wait_for(test(), 60))
        assert not errors, errors

    return runner


@contextlib.asynccontextmanager
async def serving(handler, **options) -> AsyncIterator[HttpServer]:
    server = HttpServer(handler, **options)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.close(grace_period=2.0)


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name.lower()]
        return ",".join(values) if values else None


class Client:
    """A deliberately plain HTTP/1.1 client that sends exactly the given bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, server: HttpServer) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, *, head: bool = False) -> RawResponse:
        status_line = await self.reader.readuntil(b"\r\n")
        version, status, _ = status_line.decode("latin-1").split(" ", 2)
        assert version == "HTTP/1.1"
        headers = []
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip().lower(), value.strip()))
        response = RawResponse(int(status), headers, b"")
        length = response.header("content-length")
        if head or response.status in (100, 204, 304):
            return response
        if length is not None:
            response.body = await self.reader.readexactly(int(length))
        elif response.header("transfer-encoding") == "chunked":
            response.body = await self._read_chunked()
        else:
            response.body = await self.reader.read()
        return response

    async def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                assert await self.reader.readuntil(b"\r\n") == b"\r\n"
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            assert await self.reader.readexactly(2) == b"\r\n"

    async def request(self, method: str, target: str, body: bytes = b"", **headers) -> RawResponse:
        lines = [f"{method} {target} HTTP/1.1", "Host: test"]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return await self.response(head=method == "HEAD")

    async def at_eof(self) -> bytes:
        """Whatever the server still sends before it closes the connection."""
        return await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def echo(request: Request) -> Response:
    """Answers with what it read of the request."""
    data = b""
    while chunk := await request.body.read(64 * 1024):
        data += chunk
    summary = (
        f"{request.method} {request.target} path={request.path} query={request.query_string} "
        f"len={len(data)} expected={request.body.expected_length}"
    )
    return Response(
        200, [("Content-Type", "text/plain"), ("X-Body", data[:64].hex())], summary.encode()
    )


# Requests, bodies and keep-alive


def test_get_request_fields_and_response_framing(run) -> None:
    seen: list[Request] = []

    async def handler(request: Request) -> Response:
        seen.append(request)
        return Response(200, [("Content-Type", "text/plain"), ("ETag", '"x"')], b"hello")

    async def test() -> None:
        async with serving(handler) as server:
            client = await Client.connect(server)
            await client.send(
                b"GET /bucket/a%20b?uploads&x=1 HTTP/1.1\r\nHost: test\r\n"
                b"X-Amz-Meta-A: one\r\nx-amz-meta-a: two  \r\n\r\n"
            )
            response = await client.response()
            assert response.status == 200
            assert response.body == b"hello"
            assert response.header("content-length") == "5"
            assert response.header("etag") == '"x"'
            assert response.header("date").endswith("GMT")
            assert response.header("connection") is None
            await client.close()
        request = seen[0]
        assert request.method == "GET"
        assert request.target == "/bucket/a%20b?uploads&x=1"
        assert request.path == "/bucket/a%20b"
        assert request.query_string == "uploads&x=1"
        assert request.http_version == "1.1"
        assert request.client[0] == "127.0.0.1"
        assert request.headers.get("X-AMZ-META-A") == "one,two"
        assert request.headers.getall("x-amz-meta-a") == ["one", "two"]
        assert request.headers.items()[1] == ("x-amz-meta-a", "one")
        assert "HOST" in request.headers
        assert request.body.expected_length == 0
        assert request.body.consumed

    run(test)


def test_head_keeps_content_length_and_sends_no_body(run) -> None:
    iterated = []

    async def never_sent() -> AsyncIterator[bytes]:
        iterated.append(True)
        yield b"must not be sent"

    async def handler(request: Request) -> Response:
        if request.path == "/stream":
            return Response(200, body=never_sent(), content_length=16)
        if request.method == "HEAD":
            return Response(200, [("Content-Type", "text/plain")], content_length=1234)
        return Response(200, body=b"after")

    async def test() -> None:
        async with serving(handler) as server:
            client = await Client.connect(server)
            head = await client.request("HEAD", "/object")
            assert head.status == 200
            assert head.header("content-length") == "1234"
            streamed = await client.request("HEAD", "/stream")
            assert streamed.header("content-length") == "16"
            # Any stray body byte would corrupt this next response.
            after = await client.request("GET", "/object")
            assert after.body == b"after"
            await client.close()
        assert not iterated

    run(test)


def test_put_with_content_length_and_with_chunked_body(run) -> None:
    async def test() -> None:
        async with serving(echo) as server:
            client = await Client.connect(server)
            response = await client.request("PUT", "/b/k", b"0123456789")
            assert response.body == b"PUT /b/k path=/b/k query= len=10 expected=10"
            await client.send(
                b"PUT /b/c HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )
            chunked = await client.response()
            assert chunked.body.endswith(b"len=11 expected=None")
            assert chunked.header("x-body") == b"hello world".hex()
            await client.close()

    run(test)


def test_keep_alive_serves_many_requests_on_one_connection(run) -> None:
    clients = set()

    async def handler(request: Request) -> Response:
        clients.add(request.client)
        return Response(200, body=request.path.encode())

    async def test() -> None:
        async with serving(handler) as server:
            client = await Client.connect(server)
            for number in range(20):
                response = await client.request("GET", f"/{number}")
                assert response.body == f"/{number}".encode()
            assert server.connection_count == 1
            await client.close()
        assert len(clients) == 1

    run(test)


def test_pipelined_requests_are_answered_in_order_one_at_a_time(run) -> None:
    running = 0
    most_running = 0

    async def handler(request: Request) -> Response:
        nonlocal running, most_running
        running += 1
        most_running = max(most_running, running)
        await asyncio.sleep(0.01 if request.path == "/1" else 0)
        response = await echo(request)
        running -= 1
        return response

    async def test() -> None:
        async with serving(handler) as server:
            client = await Client.connect(server)
            await client.send(
                b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n"
                b"PUT /2 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
                b"PUT /3 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\nxy\r\n0\r\n\r\n"
                b"GET /4 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            bodies = [(await client.response()).body for _ in range(4)]
            assert [body.split()[1] for body in bodies] == [b"/1", b"/2", b"/3", b"/4"]
            assert b"len=3" in bodies[1]
            assert b"len=2" in bodies[2]
            assert await client.at_eof() == b""
            await client.close()
        assert most_running == 1

    run(test)


def test_pipelining_stops_reading_while_a_request_is_answered(run) -> None:
    request_line = b"GET /p HTTP/1.1\r\nHost: t\r\n\r\n"
    count = 40_000  # about 1.2 MB, far more than one socket read

    async def test() -> None:
        release = asyncio.Event()

        async def handler(request: Request) -> Response:
            await release.wait()
            return Response(200, body=b"p")

        async with serving(handler) as server:
            client = await Client.connect(server)
            sending = asyncio.create_task(client.send(request_line * count))
            (connection,) = server._settings.connections
            queued = -1
            while len(connection._queue) != queued:  # until the server stops parsing
                queued = len(connection._queue)
                await asyncio.sleep(0.05)
            assert 0 < queued < count // 2
            release.set()
            for _ in range(count):
                assert (await client.response()).body == b"p"
            await sending
            await client.close()

    run(test)


def test_connection_close_and_http10(run) -> None:
    async def test() -> None:
        async with serving(echo) as server:
            client = await Client.connect(server)
            response = await client.request("GET", "/", Connection="close")
            assert response.header("connection") == "close"
            assert await client.at_eof() == b""

            client = await Client.connect(server)
            await client.send(b"GET /old HTTP/1.0\r\n\r\n")
            response = await client.response()
            assert response.status == 200
            assert response.header("connection") == "close"
            assert await client.at_eof() == b""

            client = await Client.connect(server)
            for _ in range(2):
                await client.send(b"GET /kept HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                response = await client.response()
                assert response.header("connection") == "keep-alive"
            await client.close()

    run(test)


def test_http10_client_gets_an_unframed_stream_then_close(run) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"def"

    async def handler(request: Request) -> Response:
        return Response(200, body=chunks())

    async def test() -> None:
        async with serving(handler) as server:
            client = await Client.connect(server)
            await client.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            response = await client.response()
            assert response.header("transfer-encoding") is None
            assert response.header("connection") == "close"
            assert response.body == b"abcdef"

    run(test)


# Expect: 100-continue


def test_continue_is_sent_only_when_the_handler_reads_the_body(run) -> None:
    async def test() -> None:
        reached = asyncio.Event()
        proceed = asyncio.Event()

        async def handler(request: Request) -> Response:
            reached.set()
            await proceed.wait()
            return await echo(request)

        async with serving(handler) as server:
            client = await Client.connect(server)
            await client.send(
                b"PUT /k HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            )
            await reached.wait()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.reader.read(1), 0.05)
            proceed.set()
            interim = await client.response()
            assert interim.status == 100
            await client.send(b"hello")
            final = await client.response()
            assert final.status == 200
            assert final.header("x-body") == b"hello".hex()
            assert final.header("connection") is None
            await client.close()

    run(test)


def test_rejection_without_reading_never_sends_continue_and_closes(run) -> None:
    async def handler(request: Request) -> Response:
        return Response(403, body=b"<Error><Code>AccessDenied</Code></Error>")

    async def test() -> None:
        async with serving(handler) as server:
            client = await Client.connect(server)
            await client.send(
                b"PUT /k HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            )
            response = await client.response()
            assert response.status == 403
            assert response.header("connection") == "close"
            assert await client.at_eof() == b""

    run(test)


def test_small_unread_body_is_drained_and_the_connection_kept(run) -> None:
    async def handler(request: Request) -> Response:
        return Response(200, body=b"ignored the body")

    async def test() -> None:
        async with serving(handler) as server:
            client = await Client.connect(server)
            await client.send(
                b"PUT /a HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"x" * 400
            )
            response = await client.response()
            assert response.header("connection") is None
            await client.send(b"x" * 600)
            assert (await client.request("GET", "/next")).status == 200
            await client.close()

    run(test)


def test_large_unread_body_closes_the_connection(run) -> None:
    async def handler(request: Request) -> Response:
        await request.body.read(1)
        return Response(413, body=b"too large")

    async def test() -> None:
        async with serving(handler) as server:
            client = await Client.connect(server)
            await client.send(
                b"PUT /a HTTP/1.1\r\nHost: t\r\nContent-Length: 10485760\r\n\r\n" + b"x" * 100_000
            )
            response = await client.response()
            assert response.status == 413
            assert response.header("connection") == "close"
            assert await client.at_eof() == b""

    run(test)


# Backpressure both ways


def test_large_upload_streams_with_a_bounded_buffer(run) -> None:
    size = 64 * MiB
    limit = 1 * MiB
    payload = bytes(range(256)) * (MiB // 256)

    async def test() -> None:
        result: dict[str, object] = {}

        async def handler(request: Request) -> Response:
            digest = hashlib.sha256()
            reads = 0
            while chunk := await request.body.read(256 * 1024):
                digest.update(chunk)
                reads += 1
                if reads % 4 == 0:
                    await asyncio.sleep(0.001)  # slower than the client
            result["peak"] = request.body.peak_buffered
            result["consumed"] = request.body.consumed
            return Response(200, body=digest.hexdigest().encode())

        async with serving(handler, limits=HttpLimits(max_buffered_body=limit)) as server:
            client = await Client.connect(server)
            await client.send(
                f"PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n".encode()
            )
            expected = hashlib.sha256()
            for _ in range(size // MiB):
                expected.update(payload)
                await client.send(payload)
            response = await client.response()
            assert response.body == expected.hexdigest().encode()
            await client.close()
        assert result["consumed"] is True
        # Reading stops above the limit; at most one more socket read arrives after that.
        assert limit < result["peak"] <= limit + 512 * 1024

    run(test)


def test_streamed_response_to_a_slow_reader_stays_bounded(run) -> None:
    total = 64 * MiB
    chunk = b"z" * MiB

    async def test() -> None:
        produced = 0

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal produced
            for _ in range(total // MiB):
                produced += len(chunk)
                yield chunk

        async def handler(request: Request) -> Response:
            return Response(200, body=chunks(), content_length=total)

        async with serving(handler) as server:
            client = await Client.connect(server)
            await client.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            previous = -1
            while produced != previous:  # wait until the producer is held back
                previous = produced
                await asyncio.sleep(0.05)
            assert produced <= 16 * MiB
            response = await client.response()
            assert len(response.body) == total
            assert response.body[-3:] == b"zzz"
            await client.close()

    run(test)


def test_a_large_chunk_to_a_reader_that_never_reads_is_not_all_buffered(run) -> None:
    """A body chunk goes to the transport in slices: the transport holds about
    its high-water mark, not the whole chunk the socket could not take."""
    chunk = b"z" * (16 * MiB)

    async def test() -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield chunk

        async def handler(request: Request) -> Response:
            return Response(200, body=chunks(), content_length=len(chunk))

        async with serving(handler) as server:
            client = await Client.connect(server)
            await client.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            (connection,) = server._settings.connections
            transport = connection._transport
            previous = -1
            while transport.get_write_buffer_size() != previous:  # until the socket is full
                previous = transport.get_write_buffer_size()
                await asyncio.sleep(0.05)
            assert 0 < previous <= 512 * 1024
            response = await client.response()
            assert response.body == chunk
            await client.close()

    run(test)


def test_write_timeout_aborts_a_reader_that_never_reads(run) -> None:
    async def test() -> None:
        finished = asyncio.Event()

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"z" * MiB
            finally:
                finished.set()

        async def handler(request: Request) -> Response:
            return Response(200, body=chunks())

        async with serving(handler, limits=HttpLimits(write_timeout=0.2)) as server:
            client = await Client.connect(server)
            await client.send(b"GET /endless HTTP/1.1\r\nHost: t\r\n\r\n")
            await finished.wait()
            while server.connection_count:
                await asyncio.sleep(0.01)
            client.writer.transport.abort()

    run(test)


def file_region(path: Path, data: bytes) -> FileRegion:
    path.write_bytes(data)
    return FileRegion(OpenFile(os.open(path, os.O_RDONLY)), 0, len(data))


def test_file_regions_are_sent_from_their_files(run, tmp_path) -> None:
    data = os.urandom(3 * MiB + 5)
    region = file_region(tmp_path / "block", data)

    async def parts() -> AsyncIterator[bytes | FileRegion]:
        yield b"head-"
        yield region.slice(0, MiB)
        yield region.slice(MiB, len(data))
        yield b"-tail"

    async def handler(request: Request) -> Response:
        length = len(data) + 10 if request.path == "/framed" else None
        return Response(200, body=parts(), content_length=length)

    async def test() -> None:
        async with serving(handler) as server:
            client = await Client.connect(server)
            for target in ("/framed", "/chunked", "/framed"):  # one connection throughout
                response = await client.request("GET", target)
                assert response.status == 200
                assert response.body == b"head-" + data + b"-tail"
            await client.close()

    run(test)


def test_a_file_region_to_a_slow_reader_waits_on_the_socket_not_in_memory(run, tmp_path) -> None:
    """The region goes from the file to the socket as the client takes it: while the
    client does not read, the transport holds nothing (a copy in memory would be there)."""
    data = os.urandom(32 * MiB)
    region = file_region(tmp_path / "block", data)

    async def parts() -> AsyncIterator[FileRegion]:
        yield region

    async def handler(request: Request) -> Response:
        return Response(200, body=parts(), content_length=len(data))

    async def test() -> None:
        async with serving(handler) as server:
            client = await Client.connect(server)
            await client.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            (connection,) = server._settings.connections
            while connection._drain_waiter is None:  # until the socket is full
                await asyncio.sleep(0.01)
            assert connection._transport.get_write_buffer_size() == 0
            response = await client.response()
            assert response.body == data
            await client.close()

    run(test)


def test_a_reader_that_never_reads_a_file_region_is_cut_off_and_nothing_stays_open(
    run, tmp_path
) -> None:
    path = tmp_path / "block"
    path.write_bytes(os.urandom(32 * MiB))

    async def parts() -> AsyncIterator[FileRegion]:
        yield FileRegion(OpenFile(os.open(path, os.O_RDONLY)), 0, 32 * MiB)

    async def handler(request: Request) -> Response:
        return Response(200, body=parts(), content_length=32 * MiB)

    def open_descriptors() -> set[str]:
        return set(os.listdir("/proc/self/fd"))

    async def test() -> None:
        before = open_descriptors()
        async with serving(handler, limits=HttpLimits(write_timeout=0.2)) as server:
            client = await Client.connect(server)
            await client.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            while not server._settings.connections:
                await asyncio.sleep(0.01)
            while server.connection_count:  # cut off by the write timeout
                await asyncio.sleep(0.01)
            client.writer.transport.abort()
        await asyncio.sleep(0.05)  # the aborted client's transport lets its socket go
        gc.collect()
        left = [os.readlink(f"/proc/self/fd/{n}") for n in open_descriptors() - before]
        # Neither the file nor the socket's duplicate (uvloop opens /dev/null once).
        assert not [target for target in left if target == str(path) or "socket" in target]

    run(test)


# Protocol errors


def test_header_section_too_large_is_431_from_render_error(run) -> None:
    rendered = []

    def render_error(status: int, code: str, message: str) -> Response:
        rendered.append((status, code))
        return Response(
            status, [("Content-Type", "application/xml")], f"<Code>{code}</Code>".encode()
        )

    async def test() -> None:
        limits = HttpLimits(max_header_bytes=4096)
        async with serving(echo, limits=limits, render_error=render_error) as server:
            many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(100))
            endless_value = b"X-Long: " + b"v" * 20_000
            long_target = b"/" + b"a" * 5000
            for data in (
                b"GET / HTTP/1.1\r\n" + many + b"\r\n",
                b"GET / HTTP/1.1\r\n" + endless_value,
                b"GET " + long_target + b" HTTP/1.1\r\n\r\n",
            ):
                client = await Client.connect(server)
                for start in range(0, len(data), 1000):  # in pieces, as a slow client would
                    await client.send(data[start : start + 1000])
                    await asyncio.sleep(0)
                response = await client.response()
                assert response.status == 431
                assert response.body == b"<Code>RequestHeaderSectionTooLarge</Code>"
                assert response.header("connection") == "close"
                await client.close()
        assert rendered == [(431, "RequestHeaderSectionTooLarge")] * 3

    run(test)


def test_garbage_gets_400_and_the_server_keeps_serving(run) -> None:
    async def test() -> None:
        async with serving(echo) as server:
            for garbage in (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
                b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                b"GET /\x01 HTTP/1.1\r\n\r\n",
            ):
                client = await Client.connect(server)
                await client.send(garbage)
                response = await client.response()
                assert response.status == 400
                assert response.body.startswith(b"BadRequest")
                assert await client.at_eof() == b""
            client = await Client.connect(server)
            assert (await client.request("GET", "/fine")).status == 200
            await client.close()

    run(test)


def test_unknown_methods(run) -> None:
    async def test() -> None:
        async with serving(echo) as server:
            client = await Client.connect(server)
            await client.send(b"FROB / HTTP/1.1\r\nHost: t\r\n\r\n")
            response = await client.response()
            assert response.status == 405
            assert response.body.startswith(b"MethodNotAllowed")
            client = await Client.connect(server)
            response = await client.request("PROPFIND", "/x")
            assert response.body.startswith(b"PROPFIND /x")
            await client.close()

    run(test)


def test_pipelined_garbage_is_answered_after_the_good_request(run) -> None:
    async def test() -> None:
        async with serving(echo) as server:
            client = await Client.connect(server)
            await client.send(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n\x00\x01garbage\r\n\r\n")
            assert (await client.response()).status == 200
            assert (await client.response()).status == 400
            assert await client.at_eof() == b""

    run(test)


def test_handler_exception_goes_through_the_hook_and_the_server_survives(run, caplog) -> None:
    failures = []

    async def handler(request: Request) -> Response:
        if request.path == "/boom":
            raise ValueError("secret detail")
        return Response(200, body=b"fine")

    def on_handler_exception(request: Request, exc: BaseException) -> Response:
        failures.append((request.path, type(exc)))
        return Response(500, body=b"<Code>InternalError</Code>")

    async def test() -> None:
        async with serving(handler, on_handler_exception=on_handler_exception) as server:
            client = await Client.connect(server)
            response = await client.request("GET", "/boom")
            assert response.status == 500
            assert response.body == b"<Code>InternalError</Code>"
            assert (await client.request("GET", "/ok")).body == b"fine"
            await client.close()
        async with serving(handler) as server:
            client = await Client.connect(server)
            response = await client.request("GET", "/boom")
            assert response.status == 500
            assert b"secret" not in response.body
            await client.close()

    with caplog.at_level(logging.ERROR, logger="granary.http"):
        run(test)
    assert failures == [("/boom", ValueError)]
    assert any(record.exc_info for record in caplog.records if record.name == "granary.http")


def test_handler_returning_a_bad_response_is_a_500(run) -> None:
    async def handler(request: Request) -> Response:
        if request.path == "/split":
            return Response(200, [("X-Evil", "a\r\nInjected: yes")], b"x")
        if request.path == "/unicode":
            return Response(200, [("X-Name", "snowman \u2603")], b"x")
        return "not a response"  # type: ignore[return-value]

    async def test() -> None:
        async with serving(handler) as server:
            client = await Client.connect(server)
            for path in ("/split", "/unicode", "/other"):
                response = await client.request("GET", path)
                assert response.status == 500
                assert response.header("injected") is None
            await client.close()

    run(test)


# Bodies that do not arrive


def test_truncated_body_raises_incomplete(run) -> None:
    async def test() -> None:
        outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def handler(request: Request) -> Response:
            try:
                await request.body.read()
                await request.body.read()
            except BodyError as exc:
                outcome.set_result(exc.reason)
                raise
            return Response(200)

        async with serving(handler) as server:
            client = await Client.connect(server)
            await client.send(
                b"PUT /k HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n0123456789"
            )
            client.writer.write_eof()
            assert await outcome == "incomplete"
            await client.close()

    run(test)


def test_malformed_chunked_body_raises_incomplete(run) -> None:
    async def test() -> None:
        outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def handler(request: Request) -> Response:
            try:
                while await request.body.read():
                    pass
            except BodyError as exc:
                outcome.set_result(exc.reason)
                return Response(400, body=b"IncompleteBody")
            return Response(200)

        async with serving(handler) as server:
            client = await Client.connect(server)
            await client.send(
                b"PUT /k HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\nZZZ\r\n"
            )
            assert await outcome == "incomplete"
            response = await client.response()
            assert response.status == 400
            assert response.header("connection") == "close"
            await client.close()

    run(test)


def test_trailers_are_dropped_and_endless_framing_is_cut(run) -> None:
    async def test() -> None:
        outcomes: list[str] = []
        first_piece = asyncio.Event()

        async def handler(request: Request) -> Response:
            data = b""
            try:
                while piece := await request.body.read():
                    data += piece
                    first_piece.set()
            except BodyError as exc:
                outcomes.append(exc.reason)
                return Response(400, body=b"IncompleteBody")
            outcomes.append(f"{data!r} {request.headers.items()}")
            return Response(200)

        limits = HttpLimits(max_header_bytes=4096)
        async with serving(handler, limits=limits) as server:
            client = await Client.connect(server)
            head = b"PUT /t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
            await client.send(head + b"0\r\nX-Checksum: 1234\r\n\r\n")
            assert (await client.response()).status == 200
            assert outcomes.pop() == "b'abc' [('host', 't'), ('transfer-encoding', 'chunked')]"
            first_piece.clear()
            await client.send(head)
            await first_piece.wait()
            await client.send(b"0\r\nX-Endless: ")
            for _ in range(10):
                await client.send(b"v" * 1000)
            response = await client.response()
            assert response.status == 400
            assert response.header("connection") == "close"
            assert outcomes == ["incomplete"]
            await client.close()

    run(test)


def test_stalled_body_raises_timeout(run) -> None:
    async def handler(request: Request) -> Response:
        try:
            while await request.body.read():
                pass
        except BodyError as exc:
            return Response(400, body=exc.reason.encode())
        return Response(200)

    async def test() -> None:
        async with serving(handler, limits=HttpLimits(body_timeout=0.2)) as server:
            client = await Client.connect(server)
            await client.send(b"PUT /k HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
            response = await client.response()
            assert response.body == b"timeout"
            assert response.header("connection") == "close"
            await client.close()

    run(test)


# Timeouts between requests


def test_header_timeout(run) -> None:
    async def test() -> None:
        async with serving(echo, limits=HttpLimits(header_timeout=0.2)) as server:
            partial = await Client.connect(server)
            await partial.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
            response = await partial.response()
            assert response.status == 400
            assert response.body.startswith(b"RequestTimeout")
            assert await partial.at_eof() == b""
            silent = await Client.connect(server)
            assert await silent.at_eof() == b""

    run(test)


def test_keepalive_timeout_closes_an_idle_connection(run) -> None:
    async def test() -> None:
        async with serving(echo, limits=HttpLimits(keepalive_timeout=0.2)) as server:
            client = await Client.connect(server)
            assert (await client.request("GET", "/")).status == 200
            assert await client.at_eof() == b""

    run(test)


# Connection limit and unproven connections


async def closed_by_server(client: Client) -> bool:
    """Whether the server closed the connection (cleanly or with a reset) without a byte."""
    try:
        return await client.at_eof() == b""
    except ConnectionResetError:
        return True


def test_connection_limit_replaces_the_oldest_idle_unproven_connection(run) -> None:
    async def test() -> None:
        async with serving(echo, limits=HttpLimits(max_connections=3)) as server:
            silent = [await Client.connect(server) for _ in range(3)]
            while server.connection_count < 3:
                await asyncio.sleep(0.01)
            client = await Client.connect(server)
            assert (await client.request("GET", "/served")).status == 200
            assert await closed_by_server(silent[0])
            assert server.connection_count == 3
            newer = await Client.connect(server)
            assert (await newer.request("GET", "/also-served")).status == 200
            assert await closed_by_server(silent[1])
            for other in (client, newer, silent[2]):
                await other.close()

    run(test)


def test_connection_limit_closes_a_new_connection_when_none_is_idle(run) -> None:
    async def test() -> None:
        release = asyncio.Event()

        async def handler(request: Request) -> Response:
            await release.wait()
            return Response(200, body=b"done")

        async with serving(handler, limits=HttpLimits(max_connections=2)) as server:
            busy = [await Client.connect(server) for _ in range(2)]
            for client in busy:
                await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            while server.requests_in_progress < 2:
                await asyncio.sleep(0.01)
            refused = await Client.connect(server)
            assert await closed_by_server(refused)
            release.set()
            for client in busy:
                assert (await client.response()).body == b"done"
                await client.close()

    run(test)


def test_an_error_answer_keeps_an_unproven_connection_only_briefly(run) -> None:
    async def test() -> None:
        async def handler(request: Request) -> Response:
            return Response(403 if request.path == "/denied" else 200, body=b"x")

        limits = HttpLimits(unproven_timeout=0.2, keepalive_timeout=75)
        async with serving(handler, limits=limits) as server:
            denied = await Client.connect(server)
            assert (await denied.request("GET", "/denied")).status == 403
            assert await closed_by_server(denied)
            allowed = await Client.connect(server)
            assert (await allowed.request("GET", "/ok")).status == 200
            await asyncio.sleep(0.5)  # past the unproven timeout: a proven connection stays
            assert (await allowed.request("GET", "/denied")).status == 403
            await allowed.close()

    run(test)


# Response bodies


def test_chunked_response_and_statuses_without_body(run) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"hello "
        yield b""
        yield b"world"

    async def handler(request: Request) -> Response:
        if request.path == "/204":
            return Response(204, body=b"dropped")
        if request.path == "/304":
            return Response(304, [("ETag", '"e"')], b"dropped")
        return Response(200, body=chunks())

    async def test() -> None:
        async with serving(handler) as server:
            client = await Client.connect(server)
            streamed = await client.request("GET", "/stream")
            assert streamed.header("transfer-encoding") == "chunked"
            assert streamed.body == b"hello world"
            no_content = await client.request("GET", "/204")
            assert no_content.header("content-length") is None
            not_modified = await client.request("GET", "/304")
            assert not_modified.header("etag") == '"e"'
            assert (await client.request("GET", "/stream")).body == b"hello world"
            await client.close()

    run(test)


@pytest.mark.parametrize("failure", ["raises", "short", "long"])
def test_broken_response_stream_aborts_the_connection(run, failure: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"a" * 10
        if failure == "raises":
            raise RuntimeError("storage failed")
        if failure == "long":
            yield b"b" * 10

    async def handler(request: Request) -> Response:
        if request.path == "/fine":
            return Response(200, body=b"fine")
        length = 10 if failure == "long" else 20
        return Response(200, body=chunks(), content_length=length)

    async def test() -> None:
        async with serving(handler) as server:
            client = await Client.connect(server)
            await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            if failure == "long":
                # The announced 10 bytes go out, the surplus never does.
                assert (await client.response()).body == b"a" * 10
                with contextlib.suppress(ConnectionError):
                    assert await client.at_eof() == b""
            else:
                with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                    await client.response()
            next_client = await Client.connect(server)
            assert (await next_client.request("GET", "/fine")).body == b"fine"
            await next_client.close()

    run(test)


# Shutdown


def test_close_finishes_requests_in_progress_and_closes_idle_connections(run) -> None:
    async def test() -> None:
        release = asyncio.Event()
        started = asyncio.Event()

        async def handler(request: Request) -> Response:
            if request.path == "/slow":
                started.set()
                await release.wait()
            return Response(200, body=b"done")

        server = HttpServer(handler)
        await server.start("127.0.0.1", 0)
        port = server.port
        idle = await Client.connect(server)
        assert (await idle.request("GET", "/")).status == 200
        busy = await Client.connect(server)
        await busy.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        await started.wait()
        closing = asyncio.create_task(server.close(grace_period=5.0))
        assert await idle.at_eof() == b""
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        release.set()
        response = await busy.response()
        assert response.body == b"done"
        assert response.header("connection") == "close"
        await busy.close()
        await closing
        assert server.connection_count == 0

    run(test)


# TLS and a real client


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls(run, tmp_path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))

    block = os.urandom(2 * MiB)
    region = file_region(tmp_path / "block", block)

    async def parts() -> AsyncIterator[FileRegion]:
        yield region

    async def handler(request: Request) -> Response:
        if request.path == "/reject":
            return Response(403, body=b"denied")
        if request.path == "/file":  # over TLS a region goes through the transport
            return Response(200, body=parts(), content_length=len(block))
        return await echo(request)

    async def test() -> None:
        server = HttpServer(handler)
        await server.start("127.0.0.1", 0, ssl=server_context)
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=client_context
            )
            client = Client(reader, writer)
            assert (await client.request("GET", "/file")).body == block
            assert (await client.request("PUT", "/k", b"secret")).header(
                "x-body"
            ) == b"secret".hex()
            await client.send(
                b"PUT /reject HTTP/1.1\r\nHost: t\r\nContent-Length: 9999999\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            rejected = await client.response()
            assert rejected.status == 403
            assert rejected.header("connection") == "close"
            await client.close()
        finally:
            await server.close(grace_period=2.0)

    run(test)


def test_aiohttp_client(run) -> None:
    async def test() -> None:
        async def upload() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"q" * 100_000

        async with serving(echo) as server, aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{server.port}"
            async with session.get(f"{base}/a?b=c") as response:
                assert await response.text() == "GET /a?b=c path=/a query=b=c len=0 expected=0"
            async with session.put(f"{base}/up", data=upload()) as response:
                assert (await response.read()).endswith(b"len=1000000 expected=None")
            async with session.put(f"{base}/up", data=b"x" * 5000, expect100=True) as response:
                assert (await response.read()).endswith(b"len=5000 expected=5000")

    run(test)
