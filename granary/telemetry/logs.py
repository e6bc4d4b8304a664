"""Logging: text or JSON lines, levels per module, and the id of the request
each line was written for.

Levels come from `GRANARY_LOG`, a comma-separated list in the manner of
Garage's `RUST_LOG`: a bare level sets the default, `module=level` one module
and its children (`GRANARY_LOG=info,granary.net=debug`). A request's handler
sets `request_id` (a context variable, so the tasks it starts inherit it),
and every line logged on its behalf carries it: ` [request <id>]` in text,
`"request_id"` in JSON.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
from typing import Literal

LogFormat = Literal["text", "json"]
LEVELS_VARIABLE = "GRANARY_LOG"
FORMAT_VARIABLE = "GRANARY_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request)s: %(message)s"

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class _RequestFilter(logging.Filter):
    """Puts the current request's id on every record (`record.request_id`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = request_id.get()
        record.request_id = current
        record.request = f" [request {current}]" if current else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, error."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        current = getattr(record, "request_id", None)
        if current:
            line["request_id"] = current
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def parse_levels(spec: str) -> dict[str, int]:
    """`"info,granary.net=debug"` -> {"": INFO, "granary.net": DEBUG}; ValueError if bad."""
    levels: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        module, _, level = part.rpartition("=")
        number = logging.getLevelName(level.strip().upper())
        if not isinstance(number, int):
            raise ValueError(f"{LEVELS_VARIABLE}: unknown level {level!r} in {part!r}")
        levels[module.strip()] = number
    return levels


def setup_logging(log_format: LogFormat | None = None) -> None:
    """Log to stderr in `log_format` (else `GRANARY_LOG_FORMAT`, else text), at the
    levels of `GRANARY_LOG` (default: info)."""
    chosen = log_format or os.environ.get(FORMAT_VARIABLE) or "text"
    if chosen not in ("text", "json"):
        raise ValueError(f"{FORMAT_VARIABLE}: {chosen!r} is neither text nor json")
    levels = {"": logging.INFO, **parse_levels(os.environ.get(LEVELS_VARIABLE, ""))}
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestFilter())
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    for module, level in levels.items():
        logging.getLogger(module or None).setLevel(level)
