"""Spans: recorded only when installed and sampled, parented through the context
(tasks included), suppressed for bulk work, continued from a W3C traceparent,
and encoded as the official OTLP protobuf messages."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from granary.config import AdminConfig
from granary.telemetry import otlp, otlp_encoding, tracing
from granary.telemetry.otlp import Sink, SinkError, SpanExporter, parse_sink

TRACE = bytes(range(1, 17))
PARENT = bytes(range(1, 9))


@pytest.fixture
def recorded():
    spans: list[tracing.Span] = []
    tracing.install(spans.append, 1.0)
    yield spans
    tracing.uninstall()


def test_nothing_is_recorded_until_installed():
    assert tracing.root(TRACE, "GET") is tracing.NO_SPAN
    assert tracing.span("x") is tracing.NO_SPAN
    assert tracing.continued(f"00-{TRACE.hex()}-{PARENT.hex()}-01", "rpc") is tracing.NO_SPAN
    with tracing.suppressed():
        pass


def test_children_follow_the_current_span_across_tasks(recorded):
    async def request() -> None:
        with tracing.root(TRACE, "PutObject") as root:
            with tracing.span("object.insert"):
                await asyncio.gather(call("node-a"), call("node-b"))
            root.set("http.response.status_code", 200)

    async def call(node: str) -> None:
        with tracing.span("table/merge", tracing.CLIENT) as span:
            span.set("peer", node)
            await asyncio.sleep(0)

    assert tracing.span("outside") is tracing.NO_SPAN
    asyncio.run(request())
    by_name = {span.name: span for span in recorded if span.name != "table/merge"}
    calls = [span for span in recorded if span.name == "table/merge"]
    root, insert = by_name["PutObject"], by_name["object.insert"]
    assert root.parent_id == b"" and root.trace_id == TRACE
    assert insert.parent_id == root.span_id
    assert [c.parent_id for c in calls] == [insert.span_id] * 2
    assert {c.attributes["peer"] for c in calls} == {"node-a", "node-b"}
    assert len({span.span_id for span in recorded}) == 4
    assert all(span.end_ns >= span.start_ns > 0 for span in recorded)
    assert recorded[-1] is root  # ends last, recorded at its end


def test_bulk_work_is_neither_recorded_nor_propagated(recorded):
    with tracing.root(TRACE, "GetObject"):
        blocks = tracing.span("blocks.read")
        with tracing.suppressed():
            inner = tracing.span("block/get", tracing.CLIENT)
            assert inner is tracing.NO_SPAN and inner.traceparent() == ""
        after = tracing.span("object.get")
        assert after.recording
        blocks.end()
        blocks.end()  # once only
    assert [span.name for span in recorded] == ["blocks.read", "GetObject"]


def test_an_exception_marks_the_span(recorded):
    with pytest.raises(KeyError), tracing.root(TRACE, "GET"):
        raise KeyError("gone")
    assert recorded[0].error == "KeyError: 'gone'"


def test_sampling_follows_the_trace_id_as_otel_ratio_sampler():
    def decisions(ratio: float) -> list[bool]:
        tracing.install(lambda span: None, ratio)
        try:
            return [tracing.root(bytes(8) + low.to_bytes(8, "big"), "x").recording for low in lows]
        finally:
            tracing.uninstall()

    lows = [0, 1 << 62, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
    assert decisions(0.0) == [False] * 5
    assert decisions(0.5) == [True, True, True, False, False]
    assert decisions(1.0) == [True] * 5
    with pytest.raises(ValueError):
        tracing.install(lambda span: None, 1.5)


def test_a_call_continues_the_callers_trace_only_when_sampled(recorded):
    with tracing.root(TRACE, "PutObject"), tracing.span("object.insert", tracing.CLIENT) as client:
        header = client.traceparent()
    assert header == f"00-{TRACE.hex()}-{client.span_id.hex()}-01"
    served = tracing.continued(header, "table/merge")
    assert isinstance(served, tracing.Span)
    assert (served.trace_id, served.parent_id) == (TRACE, client.span_id)
    unsampled = header[:-2] + "00"
    assert tracing.continued(unsampled, "table/merge") is tracing.NO_SPAN


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00",
        f"00-{TRACE.hex()}-{PARENT.hex()}",
        f"00-{TRACE.hex()}-{PARENT.hex()}-01-extra",  # version 00 has four fields
        f"ff-{TRACE.hex()}-{PARENT.hex()}-01",  # version ff is invalid
        f"00-{'0' * 32}-{PARENT.hex()}-01",  # all-zero ids are invalid
        f"00-{TRACE.hex()}-{'0' * 16}-01",
        f"00-{TRACE.hex().upper()}-{PARENT.hex()}-01",  # lower-case hex only
        f"00-{TRACE.hex()[:-2]} 1-{PARENT.hex()}-01",  # fromhex would skip the space
        f"00-{TRACE.hex()}-{PARENT.hex()}-zz",
        "00-" + "g" * 32 + f"-{PARENT.hex()}-01",
    ],
)
def test_invalid_traceparents_are_ignored(value):
    assert tracing.parse_traceparent(value) is None


def test_a_later_traceparent_version_is_read_as_version_00():
    assert tracing.parse_traceparent(f"01-{TRACE.hex()}-{PARENT.hex()}-01-more") == (
        TRACE,
        PARENT,
        1,
    )


def _request(spans: list[tracing.Span], resource: dict) -> ExportTraceServiceRequest:
    raw = otlp_encoding.encode_request(resource, otlp.SCOPE, map(otlp_encoding.encode_span, spans))
    return ExportTraceServiceRequest.FromString(raw)


def test_spans_encode_as_an_otlp_export_request(recorded):
    with tracing.root(TRACE, "PutObject") as root:
        root.set("aws.s3.bucket", "photos")
        root.set("granary.request_bytes", 5)
        root.set("ratio", 0.5)
        root.set("cached", True)
        root.set("aws.s3.key", "bad \udcff surrogate")  # as a key read with surrogateescape
        with tracing.span("object.insert") as child:
            child.fail("QuorumError: 1 of 2")
    request = _request(recorded, {"service.name": "granary", "process.pid": 7})
    (resource_spans,) = request.resource_spans
    resource = {a.key: a.value for a in resource_spans.resource.attributes}
    assert resource["service.name"].string_value == "granary"
    assert resource["process.pid"].int_value == 7
    (scope,) = resource_spans.scope_spans
    assert (scope.scope.name, scope.scope.version) == otlp.SCOPE
    child_span, root_span = scope.spans
    assert root_span.trace_id == TRACE and root_span.parent_span_id == b""
    assert root_span.span_id == root.span_id
    assert root_span.kind == tracing.SERVER and root_span.name == "PutObject"
    values = {a.key: a.value for a in root_span.attributes}
    assert values["aws.s3.bucket"].string_value == "photos"
    assert values["granary.request_bytes"].int_value == 5
    assert values["ratio"].double_value == 0.5 and values["cached"].bool_value is True
    assert values["aws.s3.key"].string_value == "bad ? surrogate"
    assert root_span.status.code == 0  # unset
    assert child_span.parent_span_id == root.span_id
    assert child_span.kind == tracing.INTERNAL and child_span.name == "object.insert"
    assert child_span.status.code == 2 and child_span.status.message == "QuorumError: 1 of 2"
    assert (root_span.start_time_unix_nano, root_span.end_time_unix_nano) == (
        root.start_ns,
        root.end_ns,
    )
    assert child_span.end_time_unix_nano <= root_span.end_time_unix_nano


attribute_values = st.one_of(
    st.text(),
    st.booleans(),
    st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
    st.floats(allow_nan=False),
)


@settings(max_examples=300)
@given(
    name=st.text(max_size=300),
    kind=st.sampled_from([tracing.INTERNAL, tracing.SERVER, tracing.CLIENT]),
    times=st.tuples(st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1)),
    attributes=st.dictionaries(st.text(max_size=40), attribute_values, max_size=6),
    parented=st.booleans(),
    error=st.none() | st.text(max_size=3000),
)
def test_the_encoding_is_what_the_official_definitions_read(
    name, kind, times, attributes, parented, error
):
    """Every value a span may hold, twice (the second time from the caches),
    read back with opentelemetry-proto's own classes."""
    span = tracing.Span(TRACE, PARENT if parented else b"", name, kind)
    span.start_ns, span.end_ns = times
    span.attributes.update(attributes)
    span.error = error
    for read in _request([span, span], {"pid": -3}).resource_spans[0].scope_spans[0].spans:
        assert read.name == name and read.kind == kind
        assert (read.span_id, read.parent_span_id) == (span.span_id, span.parent_id)
        assert (read.start_time_unix_nano, read.end_time_unix_nano) == times
        got = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in read.attributes}
        assert got == attributes
        for pair in read.attributes:
            expected = attributes[pair.key]
            kind_of = {str: "string_value", bool: "bool_value", int: "int_value"}
            assert pair.value.WhichOneof("value") == kind_of.get(type(expected), "double_value")
        assert read.status.code == (0 if error is None else 2)
        assert read.status.message == (error or "")


@pytest.mark.parametrize(
    ("value", "protocol", "sink"),
    [
        ("http://localhost:4317", None, Sink("grpc", "localhost:4317", False)),
        ("http://collector", None, Sink("grpc", "collector:4317", False)),
        ("https://collector", None, Sink("grpc", "collector:443", True)),
        ("http://[::1]:4317", None, Sink("grpc", "[::1]:4317", False)),
        ("http://localhost:4318", None, Sink("http", "http://localhost:4318/v1/traces", False)),
        ("http://c:9000/v1/traces", None, Sink("http", "http://c:9000/v1/traces", False)),
        ("http://c:9000/otlp/", None, Sink("http", "http://c:9000/otlp", False)),
        ("http://c", "http", Sink("http", "http://c:4318/v1/traces", False)),
        ("https://c", "http", Sink("http", "https://c/v1/traces", True)),
        ("http://c:4318", "grpc", Sink("grpc", "c:4318", False)),
    ],
)
def test_sinks(value, protocol, sink):
    assert parse_sink(value, protocol) == sink


@pytest.mark.parametrize(
    ("value", "protocol"),
    [
        ("localhost:4317", None),
        ("grpc://c:4317", None),
        ("http://c:99999", None),
        ("http://c:4317/v1/traces", "grpc"),
        ("http://", None),
    ],
)
def test_invalid_sinks(value, protocol):
    with pytest.raises(SinkError):
        parse_sink(value, protocol)


def test_the_configuration_checks_the_sink_and_ratio():
    import msgspec

    assert AdminConfig(trace_sink="http://localhost:4317").trace_sampling_ratio == 1.0
    for bad in ({"trace_sink": "localhost:4317"}, {"trace_sampling_ratio": 2.0}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, AdminConfig)


def test_the_exporter_sends_batches_drops_beyond_its_queue_and_survives_failures(
    monkeypatch,
):
    sent: list[int] = []
    refused: list[bytes] = []
    failing = threading.Event()

    def send(raw: bytes) -> None:
        if failing.is_set():
            refused.append(raw)
            raise ConnectionRefusedError("collector down")
        request = ExportTraceServiceRequest.FromString(raw)
        sent.append(
            sum(len(scope.spans) for r in request.resource_spans for scope in r.scope_spans)
        )

    monkeypatch.setattr(otlp, "MAX_QUEUED_SPANS", 600)
    exporter = SpanExporter(send, lambda: {"service.name": "granary"})
    spans = [tracing.Span(TRACE, b"", f"s{index}", tracing.INTERNAL) for index in range(700)]
    for span in spans:
        span.end_ns = span.start_ns
    for span in spans:
        exporter.record(span)
    exporter.start()
    exporter.close()
    assert sent == [600]  # one call; 100 dropped

    sent.clear()
    failing.set()
    exporter = SpanExporter(send, lambda: {})
    exporter.start()
    exporter.record(spans[0])
    deadline = time.monotonic() + 10
    while not refused and time.monotonic() < deadline:
        time.sleep(0.05)
    failing.clear()
    exporter.record(spans[1])
    exporter.close()  # the failure was logged and counted, not raised: the thread goes on
    assert sent == [1]


def test_closing_sends_every_span_recorded_before():
    sent: list[int] = []

    def send(raw: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(raw)
        sent.append(
            sum(len(scope.spans) for r in request.resource_spans for scope in r.scope_spans)
        )

    exporter = SpanExporter(send, lambda: {})
    span = tracing.Span(TRACE, b"", "s", tracing.INTERNAL)
    span.end_ns = span.start_ns
    for _ in range(otlp.BATCH_SPANS + 5):  # a full batch, and five more
        exporter.record(span)
    exporter.close()  # stopping before its thread ran once: its one pass must send all
    exporter.start()
    exporter.close()
    assert sent == [otlp.BATCH_SPANS, 5]
