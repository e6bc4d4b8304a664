"""Frames, the priority send queue, stream buffers, addresses, the peer list file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from granary.net.addresses import format_addr, parse_addr, parse_peer
from granary.net.messages import (
    BACKGROUND,
    HIGH,
    LENGTH_SIZE,
    NORMAL,
    STREAM_WINDOW,
    Chunk,
    Hello,
    Request,
    encode_frame,
    frame_decoder,
    hello_decoder,
)
from granary.net.peer_list import PEER_LIST_FILE, load_peer_list, save_peer_list
from granary.net.send_queue import SendQueue
from granary.net.streams import CreditGate, IncomingStream, StreamOverflow


def decode(frame: bytes) -> msgspec.Struct:
    assert int.from_bytes(frame[:LENGTH_SIZE], "big") == len(frame) - LENGTH_SIZE
    return frame_decoder.decode(frame[LENGTH_SIZE:])


def test_frames_round_trip_with_their_length_prefix() -> None:
    request = Request(7, "block/get", NORMAL, b"\x00body", True)
    assert decode(encode_frame(request)) == request
    chunk = Chunk(7, True, memoryview(b"abcdef")[2:4])
    assert decode(encode_frame(chunk)) == Chunk(7, True, b"cd")
    hello = Hello(1, b"\x01" * 32, None, 3901)
    assert hello_decoder.decode(encode_frame(hello)[LENGTH_SIZE:]) == hello


def test_a_later_hello_with_more_fields_still_decodes() -> None:
    future = msgspec.msgpack.encode([1, 2, b"\x01" * 32, "h:1", 3901, False, "new field"])
    assert hello_decoder.decode(future).version == 2
    assert hello_decoder.decode(future).serves is False


def test_a_hello_from_before_links_could_serve_nothing_serves() -> None:
    older = msgspec.msgpack.encode([1, 1, b"\x01" * 32, "h:1", 3901])
    assert hello_decoder.decode(older).serves is True


def test_a_call_carries_its_trace_context_only_when_traced() -> None:
    traced = Request(
        7, "table/merge", NORMAL, b"", False, "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    )
    assert decode(encode_frame(traced)) == traced
    older = msgspec.msgpack.encode([2, 7, "table/merge", NORMAL, b"", False])
    assert frame_decoder.decode(older) == Request(7, "table/merge", NORMAL, b"", False, "")


def test_invalid_priority_is_refused() -> None:
    bad = msgspec.msgpack.encode([2, 1, "e", 9, b"", False])
    with pytest.raises(msgspec.ValidationError):
        frame_decoder.decode(bad)


def test_send_queue_gives_high_before_normal_before_background() -> None:
    async def scenario() -> list[bytes]:
        queue = SendQueue()
        queue.put(b"bg1", BACKGROUND)
        queue.put(b"n1", NORMAL)
        queue.put(b"bg2", BACKGROUND)
        queue.put(b"h1", HIGH)
        queue.put(b"n2", NORMAL)
        return await queue.next_batch()

    assert asyncio.run(scenario()) == [b"h1", b"n1", b"n2", b"bg1", b"bg2"]


def test_send_queue_batches_are_bounded_and_a_waiting_writer_wakes() -> None:
    async def scenario() -> tuple[list[int], list[bytes]]:
        queue = SendQueue()
        for _ in range(4):
            queue.put(bytes(40 * 1024), BACKGROUND)
        sizes = [len(await queue.next_batch()), len(await queue.next_batch())]
        waiting = asyncio.create_task(queue.next_batch())
        await asyncio.sleep(0)
        assert not waiting.done()
        queue.put(b"ping", HIGH)
        return sizes, await waiting

    sizes, later = asyncio.run(scenario())
    assert sizes == [2, 2]
    assert later == [b"ping"]


def test_incoming_stream_grants_credit_as_it_is_read() -> None:
    async def scenario() -> list[int]:
        granted: list[int] = []
        stream = IncomingStream(granted.append, lambda: None)
        for _ in range(8):
            stream.feed(bytes(STREAM_WINDOW // 8))
        for _ in range(8):
            await anext(stream)
        stream.finish()
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        return granted

    granted = asyncio.run(scenario())
    assert sum(granted) == STREAM_WINDOW
    assert min(granted) >= STREAM_WINDOW // 4


def test_incoming_stream_refuses_more_than_the_window() -> None:
    stream = IncomingStream(lambda _: None, lambda: None)
    stream.feed(bytes(STREAM_WINDOW))
    with pytest.raises(StreamOverflow):
        stream.feed(b"x")


def test_incoming_stream_raises_the_sender_error_after_the_data() -> None:
    async def scenario() -> list[bytes]:
        stream = IncomingStream(lambda _: None, lambda: None)
        stream.feed(b"a")
        stream.finish(RuntimeError("disk gone"))
        seen = []
        with pytest.raises(RuntimeError, match="disk gone"):
            async for chunk in stream:
                seen.append(chunk)
        return seen

    assert asyncio.run(scenario()) == [b"a"]


def test_dropping_an_unfinished_stream_abandons_it_once() -> None:
    abandoned: list[bool] = []
    stream = IncomingStream(lambda _: None, lambda: abandoned.append(True))
    stream.feed(b"a")
    del stream
    assert abandoned == [True]
    finished = IncomingStream(lambda _: None, lambda: abandoned.append(False))
    asyncio.run(read_to_the_end(finished))
    del finished
    assert abandoned == [True]


async def read_to_the_end(stream: IncomingStream) -> None:
    stream.feed(b"a")
    stream.finish()
    async for _ in stream:
        pass


def test_credit_gate_caps_what_a_peer_can_grant() -> None:
    async def scenario() -> bool:
        gate = CreditGate()
        gate.add(10 * STREAM_WINDOW)
        await gate.take(STREAM_WINDOW)
        blocked = asyncio.create_task(gate.take(1))
        await asyncio.sleep(0)
        waiting = not blocked.done()
        gate.add(1)
        await blocked
        return waiting

    assert asyncio.run(scenario())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1:3901", ("10.0.0.1", 3901)),
        ("[::1]:3901", ("::1", 3901)),
        ("node.example:1", ("node.example", 1)),
    ],
)
def test_addresses_parse_and_format(text: str, expected: tuple[str, int]) -> None:
    assert parse_addr(text) == expected
    assert format_addr(*expected) == text


@pytest.mark.parametrize("text", ["3901", ":3901", "host:", "host:99999", "host:x"])
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_addr(text)


def test_peer_strings_with_and_without_id() -> None:
    ident = bytes(range(32))
    assert parse_peer(f"{ident.hex()}@h:1") == (ident, "h:1")
    assert parse_peer("h:1") == (None, "h:1")
    with pytest.raises(ValueError, match="node id"):
        parse_peer("abcd@h:1")


def test_peer_list_file_round_trips_atomically(tmp_path: Path) -> None:
    path = tmp_path / PEER_LIST_FILE
    assert load_peer_list(path) == {}
    peers = {b"\x01" * 32: "a:1", b"\x02" * 32: "[::1]:2"}
    save_peer_list(path, peers)
    assert load_peer_list(path) == peers
    assert [p.name for p in tmp_path.iterdir()] == [PEER_LIST_FILE]
    path.write_text("not json")
    assert load_peer_list(path) == {}
