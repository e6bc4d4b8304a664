"""What the RPC layer counts, under Garage's names (`rpc_*`, by `rpc_endpoint`,
`from` and `to`, node ids cut to 16 hex digits): calls to other nodes, their
durations, and how they failed. The peering layer's own pings and peer lists
are not counted, as in Garage."""

from __future__ import annotations

from granary.telemetry.metrics import Counter, Histogram

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
