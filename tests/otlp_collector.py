"""A stand-in for an OpenTelemetry collector, for the tests.

No real collector can be installed on these machines (it is not packaged by
Debian, and only the package registries are reachable), so the tests receive
spans with this small one, written from the OTLP specification
(opentelemetry-proto's `collector/trace/v1/trace_service.proto` and the
OTLP/HTTP binding): an OTLP/gRPC server (TraceService/Export, with the
official generated servicer) and an OTLP/HTTP server (`POST /v1/traces` with
a protobuf body), both decoding the official protobuf messages. It keeps every
span it is sent, with the resource attributes of the process that sent it.
"""

from __future__ import annotations

import http.server
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.ports import free_port


@dataclass
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, object]
    resource: dict[str, object]
    error: str | None
    transport: str


@dataclass
class Collector:
    spans: list[ReceivedSpan] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def receive(self, raw: bytes, transport: str) -> None:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
        received = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            attributes=_attributes(span.attributes),
                            resource=resource,
                            error=span.status.message if span.status.code == 2 else None,
                            transport=transport,
                        )
                    )
        with self.lock:
            self.spans.extend(received)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self.lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def wait_for(self, trace_id: str, count: int, timeout: float = 30.0) -> list[ReceivedSpan]:
        """The spans of `trace_id` once at least `count` arrived (and no more for 1 s)."""
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            spans = self.trace(trace_id)
            if len(spans) >= count and len(spans) == seen:
                return spans
            seen = len(spans)
            time.sleep(1.0)
        raise AssertionError(f"{len(self.trace(trace_id))} spans of trace {trace_id}, not {count}")


def _attributes(pairs) -> dict[str, object]:
    found: dict[str, object] = {}
    for pair in pairs:
        which = pair.value.WhichOneof("value")
        found[pair.key] = getattr(pair.value, which) if which else None
    return found


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def Export(self, request, context):
        self.collector.receive(request.SerializeToString(), "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


class GrpcCollector:
    """OTLP/gRPC on 127.0.0.1:`port`."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.port = free_port()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            _TraceService(collector), self.server
        )
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    def close(self) -> None:
        self.server.stop(grace=None)


class HttpCollector:
    """OTLP/HTTP on 127.0.0.1:`port` (`POST /v1/traces`)."""

    def __init__(self, collector: Collector) -> None:
        receiver = collector

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path != "/v1/traces" or (
                    self.headers["Content-Type"] != "application/x-protobuf"
                ):
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver.receive(body, "http")
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.collector = collector
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
