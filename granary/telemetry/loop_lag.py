"""How late each process's event loop runs its callbacks: the time a request
waits behind others before it is even looked at (a stalled loop shows here
before it shows anywhere else)."""

from __future__ import annotations

import asyncio

from granary.telemetry.metrics import Gauge

LAG = Gauge(
    "granary_event_loop_lag_seconds",
    "Largest delay of a timer of an event loop over the last window, worst process",
    across_processes="max",
)
PROBE_SECS = 0.1
WINDOW_SECS = 5.0


async def watch_event_loop(stop: asyncio.Event) -> None:
    """Until `stop`: wake every PROBE_SECS, and publish the worst lateness of each
    WINDOW_SECS window."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    window_end = loop.time() + WINDOW_SECS
    while not stop.is_set():
        due = loop.time() + PROBE_SECS
        await asyncio.sleep(PROBE_SECS)
        now = loop.time()
        worst = max(worst, now - due)
        if now >= window_end:
            LAG.set(worst)
            worst, window_end = 0.0, now + WINDOW_SECS
