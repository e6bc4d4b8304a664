"""What the tables count, under Garage's names (`table_*`, by `table_name`):
quorum reads and writes with their durations, and the rows anti-entropy sends
and receives."""

from __future__ import annotations

import time

from granary.telemetry.metrics import Counter, Histogram

GETS = Counter("table_get_request_counter", "Quorum reads (one row or a range)", ["table_name"])
GET_DURATION = Histogram("table_get_request_duration", "Seconds of a quorum read", ["table_name"])
PUTS = Counter("table_put_request_counter", "Quorum writes (of one row or more)", ["table_name"])
PUT_DURATION = Histogram("table_put_request_duration", "Seconds of a quorum write", ["table_name"])
SYNC_SENT = Counter(
    "table_sync_items_sent", "Rows anti-entropy sent to a node", ["table_name", "to"]
)
SYNC_RECEIVED = Counter(
    "table_sync_items_received", "Rows anti-entropy fetched from a node", ["table_name", "from"]
)


class TableCounts:
    """One table's counters, bound once. The callers time their own calls (with
    `time.perf_counter`): a context manager here would cost a microsecond a call."""

    def __init__(self, table: str) -> None:
        self.table = table
        gets, get_duration = GETS.labels(table), GET_DURATION.labels(table)
        puts, put_duration = PUTS.labels(table), PUT_DURATION.labels(table)
        self._gets, self._get_duration = gets, get_duration
        self._puts, self._put_duration = puts, put_duration

    def read(self, started: float) -> None:
        """A quorum read that began at `started` ended (failures count too, as in Garage)."""
        self._get_duration.observe(time.perf_counter() - started)
        self._gets.inc()

    def written(self, started: float) -> None:
        self._put_duration.observe(time.perf_counter() - started)
        self._puts.inc()

    def sent(self, node: bytes, rows: int) -> None:
        SYNC_SENT.labels(self.table, node.hex()[:16]).inc(rows)

    def received(self, node: bytes, rows: int) -> None:
        SYNC_RECEIVED.labels(self.table, node.hex()[:16]).inc(rows)
