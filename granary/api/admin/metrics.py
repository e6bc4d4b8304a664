"""What the admin API counts (Garage's `api_admin_*` names), and its `/metrics`."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from granary.api.http.types import Request, Response
from granary.telemetry.metrics import Counter, Histogram
from granary.telemetry.prometheus import CONTENT_TYPE, MetricsExposition

REQUESTS = Counter("api_admin_request_counter", "Admin API requests answered", ["api_endpoint"])
ERRORS = Counter(
    "api_admin_error_counter",
    "Admin API requests answered with an error status (4xx or 5xx)",
    ["api_endpoint", "status_code"],
)
DURATION = Histogram(
    "api_admin_request_duration", "Seconds to answer an admin API request", ["api_endpoint"]
)


def record(endpoint: str, status: int, seconds: float) -> None:
    DURATION.labels(endpoint).observe(seconds)
    REQUESTS.labels(endpoint).inc()
    if status >= 400:
        ERRORS.labels(endpoint, str(status)).inc()


@dataclass
class MetricsEndpoint:
    """`GET /metrics`: open unless a metrics token is set or required (as in Garage,
    a missing or wrong token is a 403); the admin token is accepted too."""

    exposition: MetricsExposition
    token: str | None
    require_token: bool
    admin_token: str

    def allows(self, request: Request) -> bool:
        if self.token is None and not self.require_token:
            return True
        scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        given_bytes = given.strip().encode()
        accepted = [self.admin_token, *([self.token] if self.token is not None else [])]
        return any(hmac.compare_digest(given_bytes, token.encode()) for token in accepted)

    def render(self) -> Response:
        return Response(200, [("content-type", CONTENT_TYPE)], self.exposition.render())
