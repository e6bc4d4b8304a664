"""What every API server counts, by operation, under Garage's names for its
S3, K2V and admin servers: `api_<name>_request_counter`, `..._error_counter`
(4xx and 5xx, by `status_code`) and `..._request_duration` (seconds until the
response starts, its body's streaming excluded)."""

from __future__ import annotations

from granary.telemetry.metrics import Counter, Histogram


class ApiMetrics:
    def __init__(self, api: str, title: str) -> None:
        """`api`: the name in the metrics (`s3`); `title`: in their help (`S3 API`)."""
        self.requests = Counter(
            f"api_{api}_request_counter", f"Requests to the {title} answered", ["api_endpoint"]
        )
        self.errors = Counter(
            f"api_{api}_error_counter",
            f"Requests to the {title} answered with an error status (4xx or 5xx)",
            ["api_endpoint", "status_code"],
        )
        self.duration = Histogram(
            f"api_{api}_request_duration",
            f"Seconds until the response to a request to the {title} starts",
            ["api_endpoint"],
        )

    def record(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request of operation `endpoint`."""
        self.duration.labels(endpoint).observe(seconds)
        self.requests.labels(endpoint).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
