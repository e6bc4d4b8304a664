"""What follows TLS on a new connection: the peer's identity and the Hello swap."""

from __future__ import annotations

import asyncio
import logging
import ssl

import msgspec

from granary.net.addresses import format_addr
from granary.net.errors import HandshakeError
from granary.net.messages import LENGTH_SIZE, Hello, encode_frame, hello_decoder
from granary.net.tls import ClusterTls

log = logging.getLogger("granary.net")

MAX_HELLO_SIZE = 4096


async def exchange_hello(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    tls: ClusterTls,
    hello: Hello,
    timeout: float,
    expected: bytes | None = None,
) -> tuple[bytes, Hello]:
    """Send our Hello, read the peer's; return the peer's proven node id and Hello.

    `expected` is the node id the dialer wants: any other node is refused
    before it is sent anything. Both sides write first, so neither waits on
    the other. In TLS 1.3 a client whose certificate the server refuses only
    learns it here, on its first read.
    """
    where = peer_name(writer)
    peer_id = tls.peer_id(writer.get_extra_info("ssl_object"))
    if expected is not None and peer_id != expected:
        raise HandshakeError(f"{where} is node {peer_id.hex()}, not the expected {expected.hex()}")
    try:
        writer.write(encode_frame(hello))
        async with asyncio.timeout(timeout):
            await writer.drain()
            size = int.from_bytes(await reader.readexactly(LENGTH_SIZE), "big")
            if size > MAX_HELLO_SIZE:
                raise HandshakeError(f"first frame of {size} bytes is no Hello")
            theirs = hello_decoder.decode(await reader.readexactly(size))
    except TimeoutError:
        raise HandshakeError(f"{where}: no Hello within {timeout}s") from None
    except (OSError, EOFError, ssl.SSLError, msgspec.DecodeError) as exc:
        raise HandshakeError(f"{where}: {exc!r}") from None
    if theirs.version != hello.version:
        log.error(
            "node %s at %s speaks RPC protocol version %d, this node speaks %d: "
            "closing the connection (upgrade all nodes to the same major version)",
            peer_id.hex()[:16],
            where,
            theirs.version,
            hello.version,
        )
        raise HandshakeError(
            f"{where}: protocol version {theirs.version}, expected {hello.version}"
        )
    if theirs.node_id != peer_id:
        raise HandshakeError(f"{where}: Hello names another node than the certificate")
    return peer_id, theirs


def peer_name(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    return format_addr(address[0], address[1]) if address else "unknown address"
