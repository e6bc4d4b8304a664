"""Block bytes on the wire: endpoint names, small messages and streamed bodies.

A block travels as a streamed RPC body (credit-flow-controlled chunks),
never as one big message: `block/put` sends it as the request stream and
`block/get` as the reply stream; the request body is the block id.
`block/need` asks a node whether it holds a block and whether it needs it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec

from granary.net.errors import STREAM_ERROR, RpcError

PUT_ENDPOINT = "block/put"
GET_ENDPOINT = "block/get"
NEED_ENDPOINT = "block/need"

MAX_BLOCK_BYTES = 256 * 1024 * 1024
"""A streamed block larger than this is refused (block_size is far below it)."""

BLOCK_RW_TIMEOUT = 60.0
"""Seconds one node gets to take or send a whole block."""


class NeedReply(msgspec.Struct, array_like=True, frozen=True):
    present: bool
    """The node has a copy of the block."""
    needed: bool
    """The node counts references to the block."""


encode_need = msgspec.msgpack.Encoder().encode
decode_need = msgspec.msgpack.Decoder(NeedReply).decode


async def as_stream(data: bytes | bytearray) -> AsyncIterator[bytes | bytearray]:
    """A block as a stream body (the connection cuts it into chunks)."""
    yield data


async def receive(stream: AsyncIterator[bytes] | None, limit: int = MAX_BLOCK_BYTES) -> bytes:
    """Read a whole streamed block; stop the sender if it goes past `limit`."""
    if stream is None:
        raise RpcError(STREAM_ERROR, "a block is sent as a stream")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise RpcError(STREAM_ERROR, f"block larger than {limit} bytes")
            chunks.append(chunk)
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    return b"".join(chunks)
