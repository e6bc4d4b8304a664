"""What the S3 API counts, by operation: requests, errors and durations under
Garage's names and labels (its dashboards and alert rules read them), and the
bytes each operation received and sent."""

from __future__ import annotations

from granary.telemetry.api_metrics import ApiMetrics
from granary.telemetry.metrics import Counter

API = ApiMetrics("s3", "S3 API")
BYTES_RECEIVED = Counter(
    "api_s3_request_body_bytes", "Bytes of S3 request bodies, as announced", ["api_endpoint"]
)
BYTES_SENT = Counter(
    "api_s3_response_body_bytes", "Bytes of S3 response bodies, as announced", ["api_endpoint"]
)


class _Endpoint:
    """One operation's counters, bound once."""

    def __init__(self, endpoint: str) -> None:
        self.duration = API.duration.labels(endpoint)
        self.requests = API.requests.labels(endpoint)
        self.received = BYTES_RECEIVED.labels(endpoint)
        self.sent = BYTES_SENT.labels(endpoint)


_endpoints: dict[str, _Endpoint] = {}


def record(endpoint: str, status: int, seconds: float, received: int, sent: int) -> None:
    """Count one answered request of operation `endpoint`."""
    counters = _endpoints.get(endpoint)
    if counters is None:
        counters = _endpoints[endpoint] = _Endpoint(endpoint)
    counters.duration.observe(seconds)
    counters.requests.inc()
    if status >= 400:
        API.errors.labels(endpoint, str(status)).inc()
    if received:
        counters.received.inc(received)
    if sent:
        counters.sent.inc(sent)
