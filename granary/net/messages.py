"""The frames exchanged on a node-to-node connection, and their encoding.

On the wire a frame is a 4-byte big-endian length followed by a msgspec
msgpack Struct, encoded as an array whose first element is the frame's tag.

A call is a `Request`, optionally followed by its streamed body (`Chunk`
frames ending with an `End`), answered by a `Response` (with its own optional
stream) or an `Error`. Streams are flow-controlled by `Credit`: a sender may
have at most STREAM_WINDOW bytes of a stream not yet consumed by the receiver,
so a slow reader holds up only its own stream, never the connection. `reply`
tells which way a stream goes: False for the caller's request body, True for
the responder's reply body, as both use the caller's request id.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

PROTOCOL_VERSION = 1

HIGH = 0  # pings, layout
NORMAL = 1  # API traffic
BACKGROUND = 2  # sync, resync
PRIORITIES = (HIGH, NORMAL, BACKGROUND)
Priority = Annotated[int, msgspec.Meta(ge=HIGH, le=BACKGROUND)]

CHUNK_SIZE = 64 * 1024
STREAM_WINDOW = 1024 * 1024
MAX_BODY_SIZE = 16 * 1024 * 1024  # larger bodies are streamed
MAX_FRAME_SIZE = MAX_BODY_SIZE + 64 * 1024  # room for the endpoint name and fields
LENGTH_SIZE = 4


class Hello(msgspec.Struct, tag=1, array_like=True):
    """The first frame each side sends after TLS.

    `port` is the RPC port we listen on, for peers to reach us at the address
    they see when we announce no `public_addr`. `serves` is False on the links
    of a node's S3 worker processes: they call peers but answer no calls, so
    peers never route a call to one, nor count it as the node being up. (Added
    as a trailing field with a default: a node that predates it decodes it as
    True, and this node ignores the field when an older one leaves it out.)
    """

    version: int
    node_id: bytes
    public_addr: str | None
    port: int
    serves: bool = True


class Request(msgspec.Struct, tag=2, array_like=True):
    """A call. `trace` is the W3C `traceparent` of the caller's span when the
    call is traced, else empty (a trailing field with a default: a frame of a
    node that predates it decodes as untraced, and such a node ignores it)."""

    id: int
    endpoint: str
    priority: Priority
    body: bytes
    streamed: bool
    trace: str = ""


class Response(msgspec.Struct, tag=3, array_like=True):
    id: int
    body: bytes
    streamed: bool


class Error(msgspec.Struct, tag=4, array_like=True):
    id: int
    code: str
    message: str


class Chunk(msgspec.Struct, tag=5, array_like=True):
    id: int
    reply: bool
    data: bytes


class End(msgspec.Struct, tag=6, array_like=True):
    """The end of a stream; `error` is set when its producer failed."""

    id: int
    reply: bool
    error: str | None


class Credit(msgspec.Struct, tag=7, array_like=True):
    """The receiver consumed `amount` more bytes of a stream."""

    id: int
    reply: bool
    amount: int


class Cancel(msgspec.Struct, tag=8, array_like=True):
    """The caller gave up on call `id`: stop its handler and its reply stream."""

    id: int


Frame = Request | Response | Error | Chunk | End | Credit | Cancel

_encoder = msgspec.msgpack.Encoder()
frame_decoder = msgspec.msgpack.Decoder(Frame)
hello_decoder = msgspec.msgpack.Decoder(Hello)


def encode_frame(message: msgspec.Struct) -> bytearray:
    """The message with its length prefix, in one buffer."""
    buffer = bytearray(LENGTH_SIZE)
    _encoder.encode_into(message, buffer, LENGTH_SIZE)
    buffer[:LENGTH_SIZE] = (len(buffer) - LENGTH_SIZE).to_bytes(LENGTH_SIZE, "big")
    return buffer
