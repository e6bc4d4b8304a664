"""Only holders of rpc_secret get through, and a dialer gets the node it asked for."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest
import uvloop
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from granary.net.errors import PeerUnavailable
from granary.net.messages import Hello
from granary.net.rpc import NetApp

SECRET = bytes(range(32))
OTHER_SECRET = bytes(32)
Reply = tuple[bytes, AsyncIterator[bytes] | None]


def run(scenario: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(scenario, 60))


def make(secret: bytes = SECRET) -> NetApp:
    return NetApp(Ed25519PrivateKey.generate(), secret, bind=("127.0.0.1", 0), public_addr=None)


async def echo(sender: bytes, body: bytes, stream: AsyncIterator[bytes] | None) -> Reply:
    return body, None


async def started(*apps: NetApp) -> None:
    for app in apps:
        app.endpoint("echo", echo)
        await app.start()


async def still_serves(server: NetApp) -> None:
    """A fresh, legitimate node can still connect and call."""
    friend = make()
    await started(friend)
    try:
        await friend.connect(server.node_id, "127.0.0.1", server.port)
        assert await friend.call(server.node_id, "echo", b"ok") == (b"ok", None)
    finally:
        await friend.stop()


def test_a_node_with_another_secret_is_refused_both_ways() -> None:
    async def scenario() -> None:
        server, stranger = make(), make(OTHER_SECRET)
        await started(server, stranger)
        try:
            with pytest.raises(PeerUnavailable):
                await stranger.connect(None, "127.0.0.1", server.port)
            with pytest.raises(PeerUnavailable):
                await server.connect(None, "127.0.0.1", stranger.port)
            assert server.connected_peers() == [] and stranger.connected_peers() == []
            await still_serves(server)
        finally:
            await server.stop()
            await stranger.stop()

    run(scenario())


def test_a_tls_client_without_a_certificate_gets_no_byte_of_rpc() -> None:
    async def scenario() -> None:
        server = make()
        await started(server)
        try:
            anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            anonymous.check_hostname = False
            anonymous.verify_mode = ssl.CERT_NONE
            received = b""
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", server.port, ssl=anonymous
                )
                writer.write(b"\x00\x00\x00\x05hello")
                received = await reader.read(1024)
                writer.close()
            except (OSError, ssl.SSLError):
                pass
            assert received == b""
            assert server.connected_peers() == []
            await still_serves(server)
        finally:
            await server.stop()

    run(scenario())


def test_plain_tcp_garbage_is_dropped() -> None:
    async def scenario() -> None:
        server = make()
        await started(server)
        try:
            for garbage in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes(range(256)) * 64):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(garbage)
                with contextlib.suppress(ConnectionResetError):
                    assert await reader.read() == b""
                writer.close()
            assert server.connected_peers() == []
            await still_serves(server)
        finally:
            await server.stop()

    run(scenario())


def test_dialing_an_address_that_is_another_node_is_refused() -> None:
    async def scenario() -> None:
        a, b, c = make(), make(), make()
        await started(a, b, c)
        try:
            with pytest.raises(PeerUnavailable, match="not the expected"):
                await a.connect(c.node_id, "127.0.0.1", b.port)
            assert not a.is_connected(b.node_id) and not a.is_connected(c.node_id)
            assert await a.connect(None, "127.0.0.1", b.port) == b.node_id
        finally:
            for app in (a, b, c):
                await app.stop()

    run(scenario())


class FutureNode(NetApp):
    def _hello(self) -> Hello:
        hello = super()._hello()
        return Hello(hello.version + 1, hello.node_id, hello.public_addr, hello.port)


def test_an_incompatible_protocol_version_is_refused_with_a_clear_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        a = make()
        newer = FutureNode(
            Ed25519PrivateKey.generate(), SECRET, bind=("127.0.0.1", 0), public_addr=None
        )
        await started(a, newer)
        try:
            with pytest.raises(PeerUnavailable, match="protocol version"):
                await a.connect(newer.node_id, "127.0.0.1", newer.port)
            assert not a.is_connected(newer.node_id)
        finally:
            await a.stop()
            await newer.stop()

    with caplog.at_level(logging.ERROR, logger="granary.net"):
        run(scenario())
    assert any("speaks RPC protocol version 2" in r.getMessage() for r in caplog.records)
