"""What the S3 API counts, by operation: requests, errors and durations under
Garage's names and labels (its dashboards and alert rules read them), and the
bytes each operation received and sent."""

from __future__ import annotations

from granary.telemetry.metrics import Counter, Histogram

REQUESTS = Counter("api_s3_request_counter", "S3 requests answered", ["api_endpoint"])
ERRORS = Counter(
    "api_s3_error_counter",
    "S3 requests answered with an error status (4xx or 5xx)",
    ["api_endpoint", "status_code"],
)
DURATION = Histogram(
    "api_s3_request_duration",
    "Seconds from a S3 request's arrival until its response starts (body streaming excluded)",
    ["api_endpoint"],
)
BYTES_RECEIVED = Counter(
    "api_s3_request_body_bytes", "Bytes of S3 request bodies, as announced", ["api_endpoint"]
)
BYTES_SENT = Counter(
    "api_s3_response_body_bytes", "Bytes of S3 response bodies, as announced", ["api_endpoint"]
)


def record(endpoint: str, status: int, seconds: float, received: int, sent: int) -> None:
    """Count one answered request of operation `endpoint`."""
    DURATION.labels(endpoint).observe(seconds)
    REQUESTS.labels(endpoint).inc()
    if status >= 400:
        ERRORS.labels(endpoint, str(status)).inc()
    if received:
        BYTES_RECEIVED.labels(endpoint).inc(received)
    if sent:
        BYTES_SENT.labels(endpoint).inc(sent)
