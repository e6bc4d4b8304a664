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


def registry(saved, values: dict) -> Workers:
    workers = Workers(saved=saved)
    workers.variable(
        "count", lambda: values["count"], int_setter(lambda v: values.update(count=v), 1, 8)
    )
    workers.variable("seen", lambda: 42)
    return workers


def test_values_set_are_saved_and_restored_by_the_next_registry(tmp_path):
    saved = tmp_path / "worker_variables.json"
    registry(saved, {"count": 1}).set("count", "6")
    values = {"count": 1}
    registry(saved, values).restore()
    assert values == {"count": 6}


def test_unusable_saved_values_are_ignored(tmp_path):
    saved = tmp_path / "worker_variables.json"
    saved.write_text('{"count": "99", "seen": "1", "gone": "x"}')
    values = {"count": 1}
    registry(saved, values).restore()  # out of range, read-only, unknown: all skipped
    assert values == {"count": 1}
    saved.write_text("not json")
    registry(saved, values).restore()
    assert values == {"count": 1}
