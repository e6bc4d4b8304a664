"""The control channel between a node's primary and its S3 workers: framing, and the
wake-ups a worker forwards to the primary."""

from __future__ import annotations

import asyncio
import socket

import pytest

from granary.processes.control import (
    MAX_FRAME,
    Channel,
    ControlError,
    FrameReader,
    Kick,
    LayoutUpdate,
    Peers,
    Progress,
    Ready,
    Serve,
    Start,
    encode,
)
from granary.processes.worker import KickEvent


def test_messages_survive_any_split_of_the_byte_stream():
    messages = [
        Start(1, b"{}", b"\x90", 3900, [(b"\x01" * 32, "10.0.0.2:3901")], [b"\x01" * 32]),
        LayoutUpdate(b"x" * 1000),
        Peers([(b"\x02" * 32, "[::1]:3901")]),
        Ready(),
        Serve(),
        Progress(7, 6),
    ]
    stream = b"".join(encode(m) for m in messages)
    for size in (1, 3, 17, len(stream)):
        reader = FrameReader()
        received = []
        for at in range(0, len(stream), size):
            received += reader.feed(stream[at : at + size])
        assert received == messages


def test_an_oversized_or_garbled_frame_is_refused():
    with pytest.raises(ControlError):
        FrameReader().feed((MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(ControlError):
        FrameReader().feed(b"\x00\x00\x00\x02\xff\xff")


def test_a_kick_event_tells_the_primary_once_per_loop_turn():
    async def main() -> list:
        ours, theirs = socket.socketpair()
        worker_end, primary_end = await Channel.open(ours), await Channel.open(theirs)
        wakeup = KickEvent("block-gc", worker_end)
        for _ in range(3):
            wakeup.set()  # several commits in one turn of the loop
        await asyncio.sleep(0.01)
        wakeup.set()
        await asyncio.sleep(0.01)
        worker_end.close()
        received = []
        while (message := await primary_end.receive()) is not None:
            received.append(message)
        primary_end.close()
        return received

    assert asyncio.run(main()) == [Kick("block-gc"), Kick("block-gc")]
