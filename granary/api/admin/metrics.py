"""What the admin API counts (Garage's `api_admin_*` names), and its `/metrics`."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from granary.api.http.types import Request, Response
from granary.telemetry.api_metrics import ApiMetrics
from granary.telemetry.prometheus import CONTENT_TYPE, MetricsExposition

API = ApiMetrics("admin", "admin API")


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
