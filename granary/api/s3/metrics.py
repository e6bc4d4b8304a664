"""What the S3 API counts, by operation: requests, errors and durations under
Garage's names and labels (its dashboards and alert rules read them), and the
bytes each operation received and sent."""

from __future__ import annotations

from granary.telemetry.api_metrics import ApiMetrics
from granary.telemetry.metrics import Counter

API = ApiMetrics("s3", "S3")
BYTES_RECEIVED = Counter(
    "api_s3_request_body_bytes", "Bytes of S3 request bodies, as announced", ["api_endpoint"]
)
BYTES_SENT = Counter(
    "api_s3_response_body_bytes", "Bytes of S3 response bodies, as announced", ["api_endpoint"]
)


def record(endpoint: str, status: int, seconds: float, received: int, sent: int) -> None:
    """Count one answered request of operation `endpoint`."""
    API.record(endpoint, status, seconds)
    if received:
        BYTES_RECEIVED.labels(endpoint).inc(received)
    if sent:
        BYTES_SENT.labels(endpoint).inc(sent)
