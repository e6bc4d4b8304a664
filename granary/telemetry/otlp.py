"""The OTLP exporter: spans encoded as they end (on the event loop) and sent
in batches by a thread, to an OpenTelemetry collector over gRPC or HTTP.

`[admin] trace_sink` is Garage's key. Garage's documented value
`http://localhost:4317` is OTLP/gRPC; a sink on port 4318 or with a path
(`http://collector:4318/v1/traces`) is OTLP/HTTP, and `trace_protocol` says it
outright. The requests are OTLP protobuf (written by otlp_encoding.py), sent with
`grpcio` (imported only for a gRPC sink: `pip install 'granary[traces]'`) or
`urllib`.

The queue is bounded: spans beyond it are dropped and counted, and a collector
that is down costs a warning a minute, never the requests.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from granary import __version__
from granary.telemetry import tracing
from granary.telemetry.metrics import Counter
from granary.telemetry.otlp_encoding import encode_request, encode_span

log = logging.getLogger("granary.telemetry")

Protocol = Literal["grpc", "http"]
GRPC_PORT = 4317
HTTP_PORT = 4318
HTTP_PATH = "/v1/traces"
MAX_QUEUED_SPANS = 16384
BATCH_SPANS = 4096
"""Spans sent in one call: a gRPC call costs ~1.2 ms of CPU here, 2.3 µs a span
in batches of 512, 0.3 µs in batches of 4096."""
EXPORT_INTERVAL = 1.0
EXPORT_TIMEOUT = 10.0
WARNING_INTERVAL = 60.0
SCOPE = ("granary", __version__)
"""The instrumentation scope of every span."""

EXPORTED = Counter("granary_trace_spans_exported", "Spans the collector accepted")
DROPPED = Counter(
    "granary_trace_spans_dropped", "Spans dropped: the queue was full or the export failed"
)
EXPORT_ERRORS = Counter("granary_trace_export_errors", "Batches of spans the collector refused")


class SinkError(ValueError):
    pass


@dataclass(frozen=True)
class Sink:
    protocol: Protocol
    url: str
    """For gRPC, `host:port`; for HTTP, the URL spans are posted to."""
    secure: bool


def parse_sink(value: str, protocol: Protocol | None = None) -> Sink:
    """Where and how to send spans, from `trace_sink` (and `trace_protocol`)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SinkError(f"trace_sink must be an http:// or https:// URL, not {value!r}")
    try:
        port = parts.port
    except ValueError:
        raise SinkError(f"trace_sink {value!r} has an invalid port") from None
    secure = parts.scheme == "https"
    path = parts.path.rstrip("/")
    if protocol is None:
        protocol = "http" if port == HTTP_PORT or path else "grpc"
    if protocol == "grpc":
        if path:
            raise SinkError(f"an OTLP/gRPC trace_sink has no path: {value!r}")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return Sink("grpc", f"{host}:{port or (443 if secure else GRPC_PORT)}", secure)
    netloc = parts.netloc if parts.port or secure else f"{parts.netloc}:{HTTP_PORT}"
    return Sink("http", f"{parts.scheme}://{netloc}{path or HTTP_PATH}", secure)


Send = Callable[[bytes], None]
Resource = Callable[[], dict[str, str | int]]


class SpanExporter:
    """Encodes each span into OTLP as it ends (`record`, on the event loop:
    otlp_encoding.py, ~1 µs) and sends them in batches from a thread, which
    releases the interpreter's lock while it sends.

    Encoding in the thread instead was measured too (bench/telemetry_cost.py)
    and cost the requests no less: it holds the interpreter's lock wherever it
    runs, and slows the loop's own work. A batch is sent when full or after
    EXPORT_INTERVAL: a gRPC call costs ~1.2 ms of CPU here, so a busy node
    sends few large ones.
    """

    def __init__(self, send: Send, resource: Resource) -> None:
        self._send = send
        self._resource = resource
        self._spans: collections.deque[bytes] = collections.deque()
        """Encoded spans: the loop appends, the thread takes (a deque's ends are thread-safe)."""
        self._wake = threading.Event()
        self._stopping = False
        self._last_warning = 0.0
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def record(self, span: tracing.Span) -> None:
        spans = self._spans
        if len(spans) >= MAX_QUEUED_SPANS:
            DROPPED.inc()
            return
        spans.append(encode_span(span))
        if len(spans) == BATCH_SPANS:
            self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (for at most `timeout` seconds), then stop."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            full = self._wake.wait(EXPORT_INTERVAL)
            self._wake.clear()
            stopping = self._stopping
            while len(self._spans) >= BATCH_SPANS:
                self._export()
            if self._spans and (stopping or not full):  # a quiet second's spans, or the last
                self._export()
            if stopping:
                return

    def _export(self) -> None:
        spans = self._spans
        batch = [spans.popleft() for _ in range(min(len(spans), BATCH_SPANS))]
        try:
            self._send(encode_request(self._resource(), SCOPE, batch))
        except Exception as error:
            EXPORT_ERRORS.inc()
            DROPPED.inc(len(batch))
            now = time.monotonic()
            if now - self._last_warning >= WARNING_INTERVAL:
                self._last_warning = now
                log.warning("could not export %d spans: %s", len(batch), error)
            return
        EXPORTED.inc(len(batch))


def grpc_sender(sink: Sink) -> Send:
    """Export over OTLP/gRPC (TraceService/Export)."""
    import grpc

    credentials = grpc.ssl_channel_credentials() if sink.secure else None
    channel = (
        grpc.secure_channel(sink.url, credentials)
        if credentials is not None
        else grpc.insecure_channel(sink.url)
    )
    export = channel.unary_unary(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        request_serializer=None,  # the request is encoded already
        response_deserializer=None,
    )

    def send(request: bytes) -> None:
        export(request, timeout=EXPORT_TIMEOUT)

    return send


def http_sender(sink: Sink) -> Send:
    """Export over OTLP/HTTP (a protobuf POST)."""

    def send(request: bytes) -> None:
        post = urllib.request.Request(
            sink.url,
            data=request,
            method="POST",
            headers={"Content-Type": "application/x-protobuf"},
        )
        with urllib.request.urlopen(post, timeout=EXPORT_TIMEOUT) as answer:
            answer.read()

    return send


def start_exporter(
    sink: Sink,
    *,
    sampling_ratio: float,
    node_id: bytes,
    process: str,
    zone: Callable[[], str | None],
) -> SpanExporter:
    """Export this process's spans to `sink`; `zone` is read at each export (a
    layout change may move the node). Raises ImportError without the extra."""
    send = grpc_sender(sink) if sink.protocol == "grpc" else http_sender(sink)
    fixed: dict[str, str | int] = {
        "service.name": "granary",
        "service.version": __version__,
        "service.instance.id": f"{node_id.hex()}/{process}",
        "granary.node_id": node_id.hex(),
        "granary.process": process,
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
    }

    def resource() -> dict[str, str | int]:
        where = zone()
        return fixed if where is None else {**fixed, "granary.zone": where}

    exporter = SpanExporter(send, resource)
    exporter.start()
    tracing.install(exporter.record, sampling_ratio)
    return exporter


def stop_exporter(exporter: SpanExporter) -> None:
    tracing.uninstall()
    exporter.close()
