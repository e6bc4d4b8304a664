"""The control channel between a node's primary process and each S3 worker process.

One Unix socket pair per worker carries small msgpack messages, each behind
its 4-byte length. The primary starts a worker with its settings, the
layout and the peers it knows, then sends every new layout and every peer
it meets, and tells it when to open the S3 port; the worker says when it is
ready, how far its writes and reads have come through the layout versions,
and which of the primary's background workers its writes have given work
to. Framing is sans-IO (`encode`, `FrameReader`); `Channel` runs it over
asyncio streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

import msgspec

MAX_FRAME = 64 << 20  # a layout history with its trackers stays far below
_LENGTH = struct.Struct(">I")


class Start(msgspec.Struct, tag="start", array_like=True):
    """Primary → worker, first: what the worker needs to build its S3 stack."""

    slot: int
    config: bytes  # the primary's resolved Config, JSON (secrets included: never in argv or env)
    layout: bytes  # the layout history, as the primary stores it
    s3_port: int  # the S3 port (the config may say 0: any free port)
    peers: list[tuple[bytes, str]]  # (node id, address) of the peers the primary knows
    connected: list[bytes]  # those it is connected to: the worker dials them before Ready


class LayoutUpdate(msgspec.Struct, tag="layout", array_like=True):
    """Primary → worker: the node's layout history changed."""

    layout: bytes


class Peers(msgspec.Struct, tag="peers", array_like=True):
    """Primary → worker: peers to dial, (node id, address) (a new one, or a new address)."""

    entries: list[tuple[bytes, str]]


class Switches(msgspec.Struct, tag="switches", array_like=True):
    """Primary → worker, after Start and on every change: which reads hedge
    (`table-read-hedging`, `block-read-hedging`, set through the admin API)."""

    hedging: dict[str, bool]


class Serve(msgspec.Struct, tag="serve", array_like=True):
    """Primary → worker, once the node serves: open the S3 socket."""


class Ready(msgspec.Struct, tag="ready", array_like=True):
    """Worker → primary: its stack is built; it serves S3 when told to."""


class Progress(msgspec.Struct, tag="progress", array_like=True):
    """Worker → primary: the oldest layout version one of its writes may still use,
    and the version its reads go to."""

    oldest_write: int
    read_version: int


class MetricsSnapshot(msgspec.Struct, tag="metrics", array_like=True):
    """Worker → primary, every second and at the end: what it has counted so far
    (`telemetry.prometheus.snapshot`)."""

    samples: bytes


class Kick(msgspec.Struct, tag="kick", array_like=True):
    """Worker → primary: a write of the worker queued work for `worker` (see `kicks.py`)."""

    worker: str


Message = (
    Start | LayoutUpdate | Peers | Switches | Serve | Ready | Progress | Kick | MetricsSnapshot
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


class ControlError(Exception):
    """The other side sent something that is not a control message."""


def encode(message: Message) -> bytes:
    body = _encoder.encode(message)
    return _LENGTH.pack(len(body)) + body


class FrameReader:
    """Turns received bytes into messages."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages: list[Message] = []
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > MAX_FRAME:
                raise ControlError(f"control frame of {length} bytes")
            end = _LENGTH.size + length
            if len(self._buffer) < end:
                break
            try:
                messages.append(_decoder.decode(bytes(self._buffer[_LENGTH.size : end])))
            except msgspec.DecodeError as error:
                raise ControlError(str(error)) from None
            del self._buffer[:end]
        return messages


class Channel:
    """One end of a control channel on the running event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._frames = FrameReader()
        self._pending: list[Message] = []

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        return cls(reader, writer)

    def send(self, message: Message) -> None:
        """Queue `message`; a closed channel drops it (the other side is gone)."""
        if not self._writer.is_closing():
            self._writer.write(encode(message))

    async def receive(self) -> Message | None:
        """The next message, or None once the other side has closed."""
        while not self._pending:
            data = await self._reader.read(1 << 16)
            if not data:
                return None
            self._pending = self._frames.feed(data)
        return self._pending.pop(0)

    def close(self) -> None:
        self._writer.close()

    async def aclose(self) -> None:
        """Close once what was sent has left (the other side may still read it)."""
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
