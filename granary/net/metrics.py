"""What the RPC layer counts, under Garage's names (`rpc_*`, by `rpc_endpoint`,
`from` and `to`, node ids cut to 16 hex digits): calls to other nodes, their
durations, and how they failed. The peering layer's own pings and peer lists
are not counted, as in Garage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from granary.net.errors import CallTimeout, PeerUnavailable, RpcError
from granary.telemetry.metrics import Counter, Gauge, Histogram

LABELS = ["rpc_endpoint", "from", "to"]
CALLS = Counter("rpc_request_counter", "Calls made to other nodes", LABELS)
DURATION = Histogram("rpc_duration", "Seconds until a call's answer (or error)", LABELS)
TIMEOUTS = Counter("rpc_timeout_counter", "Calls that got no answer in time", LABELS)
UNREACHABLE = Counter(
    "rpc_netapp_error_counter", "Calls that failed for want of a connection", LABELS
)
FAILED = Counter("rpc_garage_error_counter", "Calls the other node answered with an error", LABELS)
UNCOUNTED_PREFIX = "granary.net/"
HEDGES_STARTED = Counter(
    "granary_hedged_reads_started", "Reads that asked one more node, being late", ["reads"]
)
HEDGES_WON = Counter(
    "granary_hedged_reads_won", "Hedged reads answered before the late node", ["reads"]
)
HEDGING_ON = Gauge(
    "granary_read_hedging", "Processes of the node that hedge these reads", ["reads"]
)


@contextmanager
def counted(endpoint: str, source: str, target: str) -> Iterator[None]:
    """Count the call made inside, and how it ended (a timeout's duration is not
    recorded, as in Garage: the wait was the timeout's, not the call's)."""
    labels = (endpoint, source, target)
    CALLS.labels(*labels).inc()
    started = time.perf_counter()
    try:
        yield
    except CallTimeout:
        TIMEOUTS.labels(*labels).inc()
        raise
    except RpcError as error:
        failures = UNREACHABLE if isinstance(error, PeerUnavailable) else FAILED
        failures.labels(*labels).inc()
        DURATION.labels(*labels).observe(time.perf_counter() - started)
        raise
    DURATION.labels(*labels).observe(time.perf_counter() - started)
