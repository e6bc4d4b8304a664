"""Log lines: levels per module from GRANARY_LOG, JSON lines, the request id."""

from __future__ import annotations

import json
import logging

import pytest

from granary.telemetry import logs


def test_levels_per_module_as_rust_log_writes_them():
    assert logs.parse_levels("info,granary.net=debug, granary.s3.access = debug") == {
        "": logging.INFO,
        "granary.net": logging.DEBUG,
        "granary.s3.access": logging.DEBUG,
    }
    assert logs.parse_levels("") == {}
    with pytest.raises(ValueError, match="loud"):
        logs.parse_levels("granary=loud")


def test_a_json_line_carries_the_request_it_was_written_for():
    record = logging.LogRecord("granary.s3", logging.WARNING, __file__, 1, "slow %s", ("x",), None)
    token = logs.request_id.set("0123ABCD")
    try:
        logs._RequestFilter().filter(record)
    finally:
        logs.request_id.reset(token)
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "slow x"
    assert line["request_id"] == "0123ABCD"
    assert (line["level"], line["logger"]) == ("WARNING", "granary.s3")
    assert line["time"].endswith("Z")
    text = logging.Formatter(logs.TEXT_FORMAT).format(record)
    assert "granary.s3 [request 0123ABCD]: slow x" in text


def test_a_line_outside_any_request_has_no_request_id():
    record = logging.LogRecord("granary.net", logging.INFO, __file__, 1, "up", (), None)
    logs._RequestFilter().filter(record)
    assert "request_id" not in json.loads(logs.JsonFormatter().format(record))
    assert logging.Formatter(logs.TEXT_FORMAT).format(record).endswith("granary.net: up")
