"""NetApp over real TLS sockets on 127.0.0.1: calls, concurrency, priorities, streams."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
import uvloop
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from granary.net.errors import (
    HANDLER_ERROR,
    NO_SUCH_ENDPOINT,
    STREAM_ERROR,
    CallTimeout,
    PeerUnavailable,
    RpcError,
)
from granary.net.messages import BACKGROUND, HIGH, MAX_BODY_SIZE, STREAM_WINDOW
from granary.net.rpc import NetApp

SECRET = bytes(range(32))
MiB = 1024 * 1024
Reply = tuple[bytes, AsyncIterator[bytes] | None]


def run(
    scenario: Coroutine[Any, Any, None], loop: Callable[[], Any] = uvloop.new_event_loop
) -> None:
    with asyncio.Runner(loop_factory=loop) as runner:
        runner.run(asyncio.wait_for(scenario, 60))


@contextlib.asynccontextmanager
async def nodes(count: int) -> AsyncIterator[list[NetApp]]:
    apps = [
        NetApp(Ed25519PrivateKey.generate(), SECRET, bind=("127.0.0.1", 0), public_addr=None)
        for _ in range(count)
    ]
    for app in apps:
        await app.start()
    try:
        yield apps
    finally:
        for app in apps:
            await app.stop()


async def connect(a: NetApp, b: NetApp) -> None:
    assert await a.connect(b.node_id, "127.0.0.1", b.port) == b.node_id
    while not b.is_connected(a.node_id):  # the acceptor registers after its Hello
        await asyncio.sleep(0.01)


async def echo(sender: bytes, body: bytes, stream: AsyncIterator[bytes] | None) -> Reply:
    return sender + body, None


async def pieces(total: int, size: int = MiB) -> AsyncIterator[bytes]:
    block = os.urandom(size)
    for _ in range(total // size):
        yield block


@pytest.mark.parametrize("loop", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_round_trip_both_ways_and_to_self(loop: Callable[[], Any]) -> None:
    async def scenario() -> None:
        async with nodes(2) as (a, b):
            for app in (a, b):
                app.endpoint("echo", echo)
            assert not a.is_connected(b.node_id)
            await connect(a, b)
            assert a.is_connected(b.node_id) and a.is_connected(a.node_id)
            assert await a.call(b.node_id, "echo", b"hi") == (a.node_id + b"hi", None)
            assert await b.call(a.node_id, "echo", b"yo") == (b.node_id + b"yo", None)
            assert await a.call(a.node_id, "echo", b"me") == (a.node_id + b"me", None)
            with pytest.raises(RpcError) as missing:
                await a.call(b.node_id, "nowhere", b"")
            assert missing.value.code == NO_SUCH_ENDPOINT
            assert await a.connect(b.node_id, "127.0.0.1", b.port) == b.node_id

    run(scenario(), loop)


def test_thousand_concurrent_calls_answered_out_of_order() -> None:
    count = 1000

    async def scenario() -> None:
        async with nodes(2) as (a, b):
            arrived: dict[int, asyncio.Event] = {}
            all_in = asyncio.Event()

            async def parked(_: bytes, body: bytes, stream: object) -> Reply:
                number = int(body)
                arrived[number] = asyncio.Event()
                if len(arrived) == count:
                    all_in.set()
                await arrived[number].wait()
                return b"re:" + body, None

            async def release_in_reverse() -> None:
                await all_in.wait()
                for number in reversed(range(count)):
                    arrived[number].set()
                    await asyncio.sleep(0)

            b.endpoint("parked", parked)
            await connect(a, b)
            finished: list[int] = []

            async def one(number: int) -> None:
                reply, _ = await a.call(b.node_id, "parked", str(number).encode())
                assert reply == f"re:{number}".encode()
                finished.append(number)

            releaser = asyncio.create_task(release_in_reverse())
            await asyncio.gather(*(one(n) for n in range(count)))
            await releaser
            assert sorted(finished) == list(range(count))
            assert finished == list(reversed(range(count)))
            assert len(b._conns[a.node_id]) == 1  # all on one connection

    run(scenario())


def test_handler_exception_is_an_rpc_error_and_the_connection_lives() -> None:
    async def scenario() -> None:
        async with nodes(2) as (a, b):

            async def broken(_: bytes, body: bytes, stream: object) -> Reply:
                raise ValueError("boom")

            async def chosen(_: bytes, body: bytes, stream: object) -> Reply:
                raise RpcError("no_such_block", "gone")

            async def wrong_type(_: bytes, body: bytes, stream: object) -> Reply:
                return "text", None  # type: ignore[return-value]

            for app in (a, b):
                app.endpoint("broken", broken)
                app.endpoint("chosen", chosen)
                app.endpoint("wrong_type", wrong_type)
                app.endpoint("echo", echo)
            await connect(a, b)
            conn = a._conns[b.node_id][-1]
            for node in (b.node_id, a.node_id):  # remote, then the local short-cut
                with pytest.raises(RpcError) as failed:
                    await a.call(node, "broken", b"")
                assert (failed.value.code, failed.value.message) == (
                    HANDLER_ERROR,
                    "ValueError: boom",
                )
                with pytest.raises(RpcError) as chose:
                    await a.call(node, "chosen", b"")
                assert (chose.value.code, chose.value.message) == ("no_such_block", "gone")
                with pytest.raises(RpcError, match="is bytes, not str"):
                    await a.call(node, "wrong_type", b"")
                with pytest.raises(RpcError, match="stream it"):
                    await a.call(node, "echo", bytes(MAX_BODY_SIZE))  # echo adds the id
            with pytest.raises(TypeError):
                await a.call(b.node_id, "echo", "text")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="stream it"):
                await a.call(b.node_id, "echo", bytes(MAX_BODY_SIZE + 1))
            assert await a.call(b.node_id, "echo", b"!") == (a.node_id + b"!", None)
            assert a._conns[b.node_id] == [conn] and not conn.closed

    run(scenario())


def test_timeout_and_cancellation_stop_the_remote_handler() -> None:
    async def scenario() -> None:
        async with nodes(2) as (a, b):
            started = asyncio.Queue[None]()
            cancelled = asyncio.Queue[None]()

            async def stuck(_: bytes, body: bytes, stream: object) -> Reply:
                started.put_nowait(None)
                try:
                    await asyncio.Event().wait()
                finally:
                    cancelled.put_nowait(None)
                return b"", None

            b.endpoint("stuck", stuck)
            b.endpoint("echo", echo)
            await connect(a, b)
            with pytest.raises(CallTimeout):
                await a.call(b.node_id, "stuck", b"", timeout=0.2)
            await started.get()
            await cancelled.get()

            call = asyncio.create_task(a.call(b.node_id, "stuck", b""))
            await started.get()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            await cancelled.get()

            with pytest.raises(CallTimeout):
                await b.call(b.node_id, "stuck", b"", timeout=0.05)  # local short-cut
            conn_a, conn_b = a._conns[b.node_id][-1], b._conns[a.node_id][-1]
            assert conn_a._calls == {} and conn_a._request_pumps == {}
            assert conn_b._serving == {}
            assert await a.call(b.node_id, "echo", b"") == (a.node_id, None)

    run(scenario())


def test_streams_both_ways_with_errors_and_early_answers() -> None:
    async def scenario() -> None:
        async with nodes(2) as (a, b):

            async def digest_and_return(
                _: bytes, body: bytes, stream: AsyncIterator[bytes]
            ) -> Reply:
                hasher = hashlib.sha256()
                chunks = []
                async for chunk in stream:
                    hasher.update(chunk)
                    chunks.append(chunk)

                async def back() -> AsyncIterator[bytes]:
                    for chunk in chunks:
                        yield chunk

                return hasher.digest(), back()

            async def failing_reply(_: bytes, body: bytes, stream: object) -> Reply:
                async def half() -> AsyncIterator[bytes]:
                    yield b"first"
                    raise OSError("disk read failed")

                return b"", half()

            async def first_chunk_only(
                _: bytes, body: bytes, stream: AsyncIterator[bytes]
            ) -> Reply:
                return await anext(stream), None

            b.endpoint("digest", digest_and_return)
            b.endpoint("failing", failing_reply)
            b.endpoint("first", first_chunk_only)
            b.endpoint("echo", echo)
            await connect(a, b)

            data = os.urandom(3 * MiB + 12345)

            async def source() -> AsyncIterator[bytes]:
                for start in range(0, len(data), 300_000):
                    yield data[start : start + 300_000]

            a.endpoint("digest", digest_and_return)
            for node in (b.node_id, a.node_id):
                digest, stream = await a.call(node, "digest", b"", stream=source())
                assert digest == hashlib.sha256(data).digest()
                assert stream is not None
                assert b"".join([chunk async for chunk in stream]) == data

            _, broken = await a.call(b.node_id, "failing", b"")
            assert broken is not None
            received = []
            with pytest.raises(RpcError) as failed:
                async for chunk in broken:
                    received.append(chunk)
            assert received == [b"first"] and failed.value.code == STREAM_ERROR
            assert "disk read failed" in failed.value.message

            first, _ = await a.call(b.node_id, "first", b"", stream=pieces(64 * MiB))
            assert len(first) > 0
            assert await a.call(b.node_id, "echo", b"") == (a.node_id, None)
            assert a._conns[b.node_id][-1]._request_pumps == {}

    run(scenario())


def test_high_priority_ping_overtakes_a_background_64_mib_stream() -> None:
    async def scenario() -> None:
        async with nodes(2) as (a, b):
            receiving = asyncio.Event()

            async def sink(_: bytes, body: bytes, stream: AsyncIterator[bytes]) -> Reply:
                total = 0
                async for chunk in stream:
                    receiving.set()
                    total += len(chunk)
                return str(total).encode(), None

            async def ping(_: bytes, body: bytes, stream: object) -> Reply:
                return b"pong", None

            b.endpoint("sink", sink)
            b.endpoint("ping", ping)
            await connect(a, b)
            done: list[str] = []

            async def bulk() -> None:
                reply, _ = await a.call(
                    b.node_id, "sink", b"", priority=BACKGROUND, stream=pieces(64 * MiB)
                )
                assert reply == str(64 * MiB).encode()
                done.append("bulk")

            async def pinged() -> None:
                await receiving.wait()
                assert await a.call(b.node_id, "ping", b"", priority=HIGH, timeout=10) == (
                    b"pong",
                    None,
                )
                done.append("ping")

            await asyncio.gather(bulk(), pinged())
            assert done == ["ping", "bulk"]

    run(scenario())


def test_a_slow_reader_bounds_what_the_sender_produces() -> None:
    """A 64 MiB reply read slowly: the sender never runs ahead by more than the
    stream window plus the one piece it is cutting, and other calls still flow."""
    total, piece = 64 * MiB, MiB

    async def scenario() -> None:
        async with nodes(2) as (a, b):
            produced = 0

            async def source() -> AsyncIterator[bytes]:
                nonlocal produced
                block = os.urandom(piece)
                for _ in range(total // piece):
                    produced += piece
                    yield block

            async def download(_: bytes, body: bytes, stream: object) -> Reply:
                return b"", source()

            b.endpoint("download", download)
            b.endpoint("echo", echo)
            await connect(a, b)
            _, stream = await a.call(b.node_id, "download", b"")
            assert stream is not None
            consumed = 0
            ahead = 0
            async for chunk in stream:
                consumed += len(chunk)
                ahead = max(ahead, produced - consumed)
                if consumed % (8 * MiB) == 0:
                    await asyncio.sleep(0.05)  # a pause lets the sender run ahead, if it could
                    ahead = max(ahead, produced - consumed)
                    assert await a.call(b.node_id, "echo", b"") == (a.node_id, None)
            assert consumed == total
            assert ahead <= STREAM_WINDOW + piece

    run(scenario())


def test_an_abandoned_reply_stream_stops_its_sender() -> None:
    async def scenario() -> None:
        async with nodes(2) as (a, b):
            closed = asyncio.Event()

            async def endless() -> AsyncIterator[bytes]:
                try:
                    while True:
                        yield bytes(64 * 1024)
                finally:
                    closed.set()

            async def download(_: bytes, body: bytes, stream: object) -> Reply:
                return b"", endless()

            b.endpoint("download", download)
            await connect(a, b)
            _, stream = await a.call(b.node_id, "download", b"")
            assert stream is not None
            await anext(stream)
            await stream.aclose()  # type: ignore[attr-defined]
            await closed.wait()
            _, dropped = await a.call(b.node_id, "download", b"")
            await anext(dropped)  # type: ignore[arg-type]
            closed.clear()
            del dropped
            await closed.wait()
            assert b._conns[a.node_id][-1]._serving == {}

    run(scenario())


def test_stopping_a_node_fails_calls_in_flight() -> None:
    async def scenario() -> None:
        async with nodes(2) as (a, b):
            started = asyncio.Event()

            async def stuck(_: bytes, body: bytes, stream: object) -> Reply:
                started.set()
                await asyncio.Event().wait()
                return b"", None

            b.endpoint("stuck", stuck)
            await connect(a, b)
            call = asyncio.create_task(a.call(b.node_id, "stuck", b""))
            await started.wait()
            await b.stop()
            with pytest.raises(RpcError) as failed:
                await call
            assert failed.value.code == "unavailable"
            while a.is_connected(b.node_id):
                await asyncio.sleep(0.01)
            with pytest.raises(RpcError, match="not connected"):
                await a.call(b.node_id, "stuck", b"")

    run(scenario())


def test_a_link_that_serves_no_calls_carries_its_callers_calls_only() -> None:
    """An S3 worker's link (Hello `serves` False): the peer answers its calls but
    never routes one of its own to it, nor counts the worker's node as up; the
    node's own serving link (its primary's) is the one calls to the node use."""

    async def scenario() -> None:
        async with nodes(1) as (peer,):
            peer.endpoint("echo", echo)
            ups: list[bytes] = []
            peer.add_listener(lambda node, _: ups.append(node), lambda node: None)
            key = Ed25519PrivateKey.generate()
            worker = NetApp(key, SECRET, bind=("127.0.0.1", 0), public_addr=None, serves=False)
            with pytest.raises(RuntimeError):
                await worker.start()
            assert await worker.connect(peer.node_id, "127.0.0.1", peer.port) == peer.node_id
            while peer.connected_callers() != [worker.node_id]:
                await asyncio.sleep(0.01)
            assert (await worker.call(peer.node_id, "echo", b"hi"))[0] == worker.node_id + b"hi"
            assert not peer.is_connected(worker.node_id) and ups == []
            with pytest.raises(PeerUnavailable):
                await peer.call(worker.node_id, "echo", b"to the worker")

            primary = NetApp(key, SECRET, bind=("127.0.0.1", 0), public_addr=None)
            await primary.start()

            async def primary_echo(sender: bytes, body: bytes, stream) -> Reply:
                return b"primary:" + body, None

            primary.endpoint("echo", primary_echo)
            try:
                await connect(primary, peer)
                assert ups == [primary.node_id]
                assert (await peer.call(primary.node_id, "echo", b"x"))[0] == b"primary:x"
                await worker.stop()
                while peer.connected_callers():
                    await asyncio.sleep(0.01)
                assert peer.is_connected(primary.node_id)  # the worker's link closing is no down
                assert (await peer.call(primary.node_id, "echo", b"y"))[0] == b"primary:y"
            finally:
                await primary.stop()

    run(scenario())
