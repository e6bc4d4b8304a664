"""Headers and Body, without sockets."""

from __future__ import annotations

import asyncio

import pytest

from granary.api.http import Body, BodyError, Headers


class FakeSource:
    def __init__(self) -> None:
        self.events: list[str] = []

    def send_continue(self) -> None:
        self.events.append("continue")

    def body_wait_started(self) -> None:
        self.events.append("wait")

    def body_wait_ended(self) -> None:
        self.events.append("woken")

    def body_full(self) -> None:
        self.events.append("full")

    def body_drained(self) -> None:
        self.events.append("drained")


def test_headers_are_case_insensitive_and_keep_repeats_in_order() -> None:
    headers = Headers([("x-a", "1"), ("host", "h"), ("x-a", "2")])
    assert headers.get("X-A") == "1,2"
    assert headers.getall("x-A") == ["1", "2"]
    assert headers.get("missing") is None
    assert headers.get("missing", "d") == "d"
    assert "HOST" in headers
    assert "nope" not in headers
    assert headers.items() == [("x-a", "1"), ("host", "h"), ("x-a", "2")]
    assert headers.as_dict() == {"x-a": "1,2", "host": "h"}
    assert len(headers) == 3
    headers.items().clear()
    headers.as_dict().clear()
    assert headers.get("host") == "h"


def test_read_splits_pieces_without_losing_bytes() -> None:
    async def test() -> None:
        body = Body(FakeSource(), 10, False, 100)
        body._feed(b"0123456")
        body._feed(b"789")
        body._finish()
        assert await body.read(3) == b"012"
        assert await body.read(3) == b"345"
        assert await body.read(3) == b"6"
        assert not body.consumed
        assert await body.read() == b"789"
        assert body.consumed
        assert await body.read() == b""
        with pytest.raises(ValueError):
            await body.read(0)

    asyncio.run(test())


def test_read_waits_for_data_and_iterates() -> None:
    async def test() -> None:
        source = FakeSource()
        body = Body(source, None, False, 100)
        loop = asyncio.get_running_loop()
        loop.call_soon(body._feed, b"ab")
        loop.call_soon(body._feed, b"cd")
        loop.call_soon(body._finish)
        assert [piece async for piece in body] == [b"ab", b"cd"]
        assert source.events[:2] == ["wait", "woken"]

    asyncio.run(test())


def test_continue_is_requested_once_and_only_on_read() -> None:
    async def test() -> None:
        source = FakeSource()
        body = Body(source, 2, True, 100)
        assert source.events == []
        body._feed(b"hi")
        assert await body.read() == b"hi"
        body._finish()
        assert await body.read() == b""
        assert source.events.count("continue") == 1

        unread_source = FakeSource()
        unread = Body(unread_source, 2, True, 100)
        unread._feed(b"hi")
        unread._finish()
        assert unread_source.events == []
        assert unread._continue_was_skipped  # the connection must not be reused

    asyncio.run(test())


def test_backpressure_signals_with_hysteresis() -> None:
    async def test() -> None:
        source = FakeSource()
        body = Body(source, None, False, 10)
        for _ in range(4):
            body._feed(b"xxxx")
        assert source.events == ["full"]
        assert body.buffered == 16
        assert body.peak_buffered == 16
        await body.read()
        await body.read()
        assert source.events == ["full"]  # 8 unread: still above half the limit
        await body.read()
        assert source.events == ["full", "drained"]
        body._feed(b"x" * 20)
        assert source.events == ["full", "drained", "full"]

    asyncio.run(test())


def test_errors_reach_the_reader_after_buffered_data() -> None:
    async def test() -> None:
        body = Body(FakeSource(), 100, False, 1000)
        body._feed(b"abc")
        body._fail(BodyError("incomplete"))
        assert await body.read() == b"abc"
        with pytest.raises(BodyError) as caught:
            await body.read()
        assert caught.value.reason == "incomplete"
        assert not body.consumed

    asyncio.run(test())


def test_a_waiting_reader_sees_a_timeout() -> None:
    async def test() -> None:
        body = Body(FakeSource(), 100, False, 1000)
        asyncio.get_running_loop().call_soon(body._fail, BodyError("timeout"))
        with pytest.raises(BodyError) as caught:
            await body.read()
        assert caught.value.reason == "timeout"

    asyncio.run(test())
