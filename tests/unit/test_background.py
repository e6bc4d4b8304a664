"""The worker registry: states, errors and live variables."""

from __future__ import annotations

import asyncio

import pytest

from granary.util.background import Workers, bool_setter, float_setter, int_setter


def test_a_worker_that_raises_is_dead_with_its_error():
    async def crash():
        raise OSError("disk on fire")

    async def finish():
        return None

    async def main():
        workers = Workers()
        await workers.spawn("crasher", crash(), queue_length=lambda: 3)
        await workers.spawn("finisher", finish())
        return workers

    workers = asyncio.run(main())
    crasher = workers.info("crasher")
    assert crasher["state"] == "dead"
    assert crasher["last_error"] == "OSError: disk on fire"
    assert crasher["queue_length"] == 3
    assert workers.info("finisher")["state"] == "done"
    assert [w["name"] for w in workers.statuses()] == ["crasher", "finisher"]
    with pytest.raises(KeyError):
        workers.info("nobody")


def test_variables_parse_check_and_refuse_read_only():
    values = {"count": 1, "tranquility": 2.0, "on": True}
    workers = Workers()
    workers.variable(
        "count", lambda: values["count"], int_setter(lambda v: values.update(count=v), 1, 8)
    )
    workers.variable(
        "tranquility",
        lambda: values["tranquility"],
        float_setter(lambda v: values.update(tranquility=v), 0, 100),
    )
    workers.variable("on", lambda: values["on"], bool_setter(lambda v: values.update(on=v)))
    workers.variable("seen", lambda: 42)
    assert workers.set("count", "4") == {"count": 4}
    assert workers.set("tranquility", "0.5") == {"tranquility": 0.5}
    assert workers.set("on", "off") == {"on": False}
    assert workers.get() == {"count": 4, "on": False, "seen": 42, "tranquility": 0.5}
    assert workers.get("seen") == {"seen": 42}
    for name, value in [("count", "9"), ("count", "two"), ("on", "maybe"), ("seen", "1")]:
        with pytest.raises(ValueError):
            workers.set(name, value)
    with pytest.raises(KeyError):
        workers.get("nothing")
