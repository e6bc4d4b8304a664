"""Random and half-valid bytes thrown at the HTTP server never break it."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from granary.api.http import BodyError, HttpLimits, HttpServer, Request, Response

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}

TOKENS = [
    b"GET ",
    b"PUT ",
    b"HEAD ",
    b"POST ",
    b"FROB ",
    b"/",
    b"/b/k?x=1",
    b" HTTP/1.1\r\n",
    b" HTTP/1.0\r\n",
    b"Host: h\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Expect: 100-continue\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive\r\n",
    b"Connection: Upgrade\r\nUpgrade: h2c\r\n",
    b"\r\n",
    b"hello",
    b"5\r\nhello\r\n",
    b"0\r\n\r\n",
    b"ffffffffffffffff\r\n",
    b":",
    b" ",
    b"\x00",
    b"\xff",
]

requests = st.one_of(
    st.binary(max_size=600),
    st.lists(
        st.one_of(st.sampled_from(TOKENS), st.binary(max_size=12)), min_size=1, max_size=40
    ).map(b"".join),
)


class ServerThread:
    """An HttpServer on its own loop in a thread, so that tests can use blocking sockets."""

    def __init__(self, loop_name: str) -> None:
        self.loop = LOOPS[loop_name]()
        self.loop_errors: list[dict] = []
        self.loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        limits = HttpLimits(
            header_timeout=1.0,
            keepalive_timeout=1.0,
            body_timeout=1.0,
            write_timeout=1.0,
            linger_timeout=0.2,
            max_header_bytes=2048,
        )
        self.server = HttpServer(self.handler, limits=limits)
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait()

    @staticmethod
    async def handler(request: Request) -> Response:
        size = 0
        try:
            while chunk := await request.body.read(4096):
                size += len(chunk)
        except BodyError:
            return Response(400, body=b"incomplete")
        if request.path == "/stream":

            async def chunks():
                yield b"a"
                yield b"b"

            return Response(200, body=chunks())
        return Response(200, body=str(size).encode())

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start("127.0.0.1", 0))
        ready.set()
        self.loop.run_forever()

    def exchange(self, data: bytes, pieces: int = 1) -> bytes:
        """Send `data`, close the sending side, and return all the server answered."""
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10) as sock:
            step = max(1, len(data) // pieces)
            try:
                for start in range(0, len(data), step):
                    sock.sendall(data[start : start + step])
                sock.shutdown(socket.SHUT_WR)
            except ConnectionError:
                pass
            received = bytearray()
            try:
                while block := sock.recv(65536):
                    received += block
            except ConnectionResetError:
                pass
            return bytes(received)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(grace_period=2.0), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module", params=sorted(LOOPS))
def server(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    errors = ErrorRecords()
    logger = logging.getLogger("granary.http")
    logger.addHandler(errors)
    thread = ServerThread(request.param)
    try:
        yield thread
        assert thread.thread.is_alive()
        assert (
            thread.exchange(b"GET /after HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")[-1:]
            == b"0"
        )
    finally:
        thread.stop()
        logger.removeHandler(errors)
    assert not thread.loop_errors, thread.loop_errors
    assert not errors.records, [record.getMessage() for record in errors.records]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=requests, pieces=st.integers(min_value=1, max_value=4))
def test_random_bytes_never_break_the_server(
    server: ServerThread, data: bytes, pieces: int
) -> None:
    answer = server.exchange(data, pieces)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 ")
    assert server.thread.is_alive()
    assert not server.loop_errors
    ok = server.exchange(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n")
