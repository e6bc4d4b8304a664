"""Spans: one per S3 request, table call, object data stream and RPC, recorded
cheaply and handed to an exporter (otlp.py) that encodes them into OTLP.

Why not the OpenTelemetry SDK's spans: one costs 15-20 µs here (measured on
this machine: `start_as_current_span` with two attributes), a tenth of a small
GET's whole CPU time; a span recorded here is a slotted object, two clock reads
and a context-variable set, ~1.5 µs, and its encoding into OTLP protobuf
~1 µs (otlp_encoding.py).

The current span is a context variable, so the tasks a request starts inherit
it. Nothing is recorded until `install()` gives a sink: the calls then return
a shared no-op span. Bulk work (the blocks of an object, the rows written per
block) runs `suppressed()`: it shows as one span per object data stream (its
blocks and bytes as attributes), never a span per block, and its RPCs carry no
trace context.

Sampling is decided once per trace, at its root, from the trace id (as
OpenTelemetry's TraceIdRatioBased sampler does, so every node decides the same
way); a node serving an RPC follows the caller's decision (the W3C
`traceparent` in the RPC frame carries it).
"""

from __future__ import annotations

import contextvars
import os
import random
import time
from collections.abc import Callable
from types import TracebackType
from typing import Final

INTERNAL: Final = 1
SERVER: Final = 2
CLIENT: Final = 3

AttributeValue = str | int | float | bool


class Span:
    """A recorded span. Enter it (`with`) to make it the current one."""

    __slots__ = (
        "_token",
        "attributes",
        "end_ns",
        "error",
        "kind",
        "name",
        "parent_id",
        "span_id",
        "start_ns",
        "trace_id",
    )

    def __init__(self, trace_id: bytes, parent_id: bytes, name: str, kind: int) -> None:
        self.trace_id = trace_id
        self.span_id = (_random.getrandbits(64) or 1).to_bytes(8, "big")
        self.parent_id = parent_id
        self.name = name
        self.kind = kind
        self.attributes: dict[str, AttributeValue] = {}
        self.error: str | None = None
        self.start_ns = time.time_ns()
        self.end_ns = 0
        self._token: contextvars.Token[Span | None] | None = None

    recording: Final = True

    def set(self, key: str, value: AttributeValue) -> None:
        self.attributes[key] = value

    def fail(self, message: str) -> None:
        """Mark the span as an error (OTLP status ERROR) with `message`."""
        self.error = message

    def traceparent(self) -> str:
        """This span as the W3C `traceparent` of a call made inside it."""
        return f"00-{self.trace_id.hex()}-{self.span_id.hex()}-01"

    def end(self) -> None:
        if self.end_ns == 0:
            self.end_ns = time.time_ns()
            if _sink is not None:
                _sink(self)

    def __enter__(self) -> Span:
        self._token = _current.set(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        if error is not None and self.error is None:
            self.error = f"{kind.__name__ if kind else 'error'}: {error}"
        self.end()


class NoSpan:
    """What the calls return when nothing is recorded: every method does nothing."""

    __slots__ = ()
    recording: Final = False

    def set(self, key: str, value: AttributeValue) -> None:
        pass

    def fail(self, message: str) -> None:
        pass

    def traceparent(self) -> str:
        return ""

    def end(self) -> None:
        pass

    def __enter__(self) -> NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _Suppressed:
    """The current span while bulk work runs: its calls record nothing."""

    __slots__ = ("_token",)

    def __init__(self) -> None:
        self._token: contextvars.Token[Span | None] | None = None

    def __enter__(self) -> None:
        self._token = _current.set(None)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _current.reset(self._token)


NO_SPAN: Final = NoSpan()
AnySpan = Span | NoSpan
SpanSink = Callable[[Span], None]

_current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("span", default=None)
_sink: SpanSink | None = None
_ratio_bound = 0
_random = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(16)))  # ids of its own


def install(sink: SpanSink, sampling_ratio: float) -> None:
    """Record spans into `sink` (called on the event loop at each span's end),
    of traces whose id falls within `sampling_ratio` (0 to 1)."""
    global _sink, _ratio_bound
    if not 0.0 <= sampling_ratio <= 1.0:
        raise ValueError("a sampling ratio is between 0 and 1")
    _ratio_bound = round(sampling_ratio * (1 << 64))
    _sink = sink


def uninstall() -> None:
    global _sink
    _sink = None


def new_trace_id() -> bytes:
    """16 random bytes, never all zero (from a generator seeded per process: a
    system call per request cost 2 % of a small GET)."""
    return (_random.getrandbits(128) or 1).to_bytes(16, "big")


def sampled(trace_id: bytes) -> bool:
    """OpenTelemetry's TraceIdRatioBased rule: the id's low 64 bits under the bound."""
    return int.from_bytes(trace_id[8:], "big") < _ratio_bound


def root(trace_id: bytes, name: str) -> AnySpan:
    """The first span of a trace (an S3 request's, SERVER), if the trace is sampled."""
    if _sink is None or not sampled(trace_id):
        return NO_SPAN
    return Span(trace_id, b"", name, SERVER)


def span(name: str, kind: int = INTERNAL) -> AnySpan:
    """A child of the current span (enter it), or NO_SPAN outside a recorded one."""
    parent = _current.get()
    if parent is None:
        return NO_SPAN
    return Span(parent.trace_id, parent.span_id, name, kind)


def suppressed() -> _Suppressed | NoSpan:
    """Run bulk work inside (`with`): nothing in it is recorded or propagated."""
    return NO_SPAN if _current.get() is None else _Suppressed()


def continued(traceparent: str, name: str, kind: int = SERVER) -> AnySpan:
    """A span continuing a caller's trace from its W3C `traceparent`, if the
    caller sampled it and this process records spans."""
    if _sink is None:
        return NO_SPAN
    parent = parse_traceparent(traceparent)
    if parent is None:
        return NO_SPAN
    trace_id, parent_id, flags = parent
    if not flags & 1:
        return NO_SPAN
    return Span(trace_id, parent_id, name, kind)


def parse_traceparent(value: str) -> tuple[bytes, bytes, int] | None:
    """(trace id, parent span id, flags) of a W3C `traceparent`, or None if invalid."""
    parts = value.split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff":
        return None
    if parts[0] == "00" and len(parts) != 4:
        return None
    version, trace_hex, parent_hex, flags_hex = parts[:4]
    if len(trace_hex) != 32 or len(parent_hex) != 16 or len(flags_hex) != 2:
        return None
    try:
        int(version, 16)
        trace_id = bytes.fromhex(trace_hex)
        parent_id = bytes.fromhex(parent_hex)
        flags = int(flags_hex, 16)
    except ValueError:
        return None
    if len(trace_id) != 16 or len(parent_id) != 8 or not any(trace_id) or not any(parent_id):
        return None  # (fromhex skips spaces: the lengths tell)
    if value[:55] != value[:55].lower():
        return None
    return trace_id, parent_id, flags
