"""Hedged reads: the one read loop of tables and blocks, and when it hedges.

Block reads and metadata (table) reads both run `hedged_read`, each with its
own numbers (`Hedging`). A read goes to the nearest holder first. If that holder has not answered
within `delay(node)`, the next holder is asked too and the first valid answer
wins (a hedged request). The delay adapts to the node: the 90th percentile
of its recent reads or, until enough of them are known, a few round
trips plus the median read time seen on any node. A floor and a cap
keep it sane: too short a delay doubles the load, too long a delay is the
stall hedging is there to avoid. A node that lost to a hedge is asked last
for a while, so a paused or overloaded node costs one delay, not one delay
per block. And hedges are rationed (`HedgeBudget`): under load every read is
slower than the recent percentile, and hedging them all would add the very
load that slows them down.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from granary.net import metrics
from granary.util.background import Workers, bool_setter

T = TypeVar("T")

MIN_SAMPLES = 8
"""Reads of a node needed before its own percentile is trusted."""


class ReadLatencies:
    """Recent read times per node, the hedge delays they give, and slow-node penalties."""

    def __init__(
        self,
        *,
        floor: float = 0.01,
        cap: float = 1.0,
        window: int = 64,
        rtt_factor: float = 4.0,
        first_guess: float = 0.02,
        slow_penalty: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.floor = floor
        self.cap = cap
        self.window = window
        self.rtt_factor = rtt_factor
        self.first_guess = first_guess
        self.slow_penalty = slow_penalty
        self._clock = clock
        self._per_node: dict[bytes, deque[float]] = {}
        self._everywhere: deque[float] = deque(maxlen=4 * window)
        self._slow_until: dict[bytes, float] = {}

    def record(self, node: bytes, seconds: float) -> None:
        """A successful read from `node` took `seconds`."""
        samples = self._per_node.get(node)
        if samples is None:
            samples = self._per_node[node] = deque(maxlen=self.window)
        samples.append(seconds)
        self._everywhere.append(seconds)

    def delay(self, node: bytes, rtt: float | None) -> float:
        """How long to wait for `node` before asking another holder too."""
        samples = self._per_node.get(node)
        if samples is not None and len(samples) >= MIN_SAMPLES:
            base = percentile(samples, 0.9)
        else:
            typical = statistics.median(self._everywhere) if self._everywhere else self.first_guess
            base = self.rtt_factor * (rtt or 0.0) + typical
        return min(max(base, self.floor), self.cap)

    def hedge_delay(
        self, node: bytes, rtt: float | None, backup: bytes | None, backup_rtt: float | None
    ) -> float:
        """`delay(node)`, but never below the time `backup` is expected to take.

        A hedge that cannot answer first is only extra load: a local read
        hedged to a remote node, say. A node never read from is expected to
        take a few round trips plus `first_guess`.
        """
        delay = self.delay(node, rtt)
        if backup is not None:
            samples = self._per_node.get(backup)
            if samples:
                expected = statistics.median(samples)
            else:
                expected = self.rtt_factor * (backup_rtt or 0.0) + self.first_guess
            delay = max(delay, expected)
        return min(delay, self.cap)

    def mark_slow(self, node: bytes) -> None:
        """`node` lost to a hedge: ask it last until the penalty expires."""
        self._slow_until[node] = self._clock() + self.slow_penalty

    def is_slow(self, node: bytes) -> bool:
        until = self._slow_until.get(node)
        if until is None:
            return False
        if self._clock() >= until:
            del self._slow_until[node]
            return False
        return True

    def order(self, nodes: Iterable[bytes]) -> list[bytes]:
        """`nodes` in the given (nearest-first) order, penalized ones moved last."""
        return sorted(nodes, key=self.is_slow)


class HedgeBudget:
    """Lets at most `fraction` of reads be hedged, plus a burst of `burst` hedges."""

    def __init__(self, fraction: float = 0.1, burst: float = 10.0) -> None:
        self.fraction = fraction
        self.burst = burst
        self.tokens = burst

    def read(self) -> None:
        """One more read: earns a fraction of a hedge."""
        self.tokens = min(self.burst, self.tokens + self.fraction)

    def take(self) -> bool:
        """Spend one hedge, if there is one to spend."""
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def percentile(samples: Iterable[float], fraction: float) -> float:
    """The nearest-rank percentile of a non-empty collection."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class Hedging:
    """What a hedged read needs to know: latencies, budget, round trips, and whether it is on."""

    def __init__(
        self,
        rtt: Callable[[bytes], float | None],
        latencies: ReadLatencies | None = None,
        budget: HedgeBudget | None = None,
        reads: str = "",
    ) -> None:
        """`reads`: what is read ("table", "block"), the label of the hedge counters."""
        self.rtt = rtt
        self._started_counter = metrics.HEDGES_STARTED.labels(reads)
        self._won_counter = metrics.HEDGES_WON.labels(reads)
        self._on_gauge = metrics.HEDGING_ON.labels(reads)
        self._switch_listeners: list[Callable[[bool], None]] = []
        self.latencies = latencies or ReadLatencies()
        self.budget = budget or HedgeBudget()
        self.enabled = True
        self.started = 0
        self.won = 0

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        """Switch hedging on or off; the listeners (the node's other processes) follow."""
        self._enabled = value
        self._on_gauge.set(1 if value else 0)
        for listener in self._switch_listeners:
            listener(value)

    def on_switch(self, listener: Callable[[bool], None]) -> None:
        self._switch_listeners.append(listener)

    def count_started(self) -> None:
        self.started += 1
        self._started_counter.inc()

    def count_won(self) -> None:
        self.won += 1
        self._won_counter.inc()

    def delay(self, node: bytes, backup: bytes | None) -> float:
        """How long to wait for `node` before asking `backup` too."""
        if backup is None:
            return self.latencies.delay(node, self.rtt(node))
        return self.latencies.hedge_delay(node, self.rtt(node), backup, self.rtt(backup))


@dataclass
class Answers(Generic[T]):
    """What a hedged read got: up to `wanted` answers (fewer if too many nodes failed)."""

    answers: list[T]
    errors: list[BaseException]


@dataclass
class _Call:
    """One node's call in a hedged read."""

    node: bytes
    started: float
    deadline: float
    """When to hedge it (infinity: never, e.g. once it has been hedged)."""
    from_fallback: bool = False
    rationed: bool = True
    """Its next hedge needs the budget; False once it waited a second delay for one."""
    hedged: bool = False
    """A hedge was started because this call was late."""


async def hedged_read(
    nodes: Sequence[bytes],
    read: Callable[[bytes], Awaitable[T]],
    hedging: Hedging | None,
    *,
    wanted: int = 1,
    fallback: Sequence[bytes] = (),
    failures: tuple[type[BaseException], ...] = (Exception,),
    on_failure: Callable[[bytes, BaseException], Awaitable[None]] | None = None,
) -> Answers[T]:
    """`read` from the `wanted` nearest of `nodes`, hedged; the first `wanted` answers win.

    `nodes` come nearest first; those that recently lost to a hedge are moved
    last. The `wanted` first are asked at once, the others only when needed:

    - a failure (an exception in `failures`; `on_failure` hears of it) brings
      in the next node at once: a failure is no slowness;
    - with `hedging` on, a call still unanswered after its hedge delay brings
      in the next node too, if the budget has a hedge to spend; a call still
      silent after a second delay, or one from a node another read caught
      stalling, is hedged regardless: it is stalled, not just slow;
    - the `fallback` nodes (an older layout's holders, say) are asked one by
      one once every node of `nodes` was asked and none is still running.
      They are never hedged.

    Once `wanted` answers are in, the calls still running are cancelled. Those
    a hedge was started for lost to it: their nodes are marked slow (asked
    last for a while) and the read counts as a hedge won. Any other exception
    than `failures` is raised, after the calls still running are cancelled.
    """
    loop = asyncio.get_running_loop()
    hedges = hedging is not None and hedging.enabled
    waiting = hedging.latencies.order(nodes) if hedging is not None else list(nodes)
    spare = list(fallback)
    if hedging is not None:
        hedging.budget.read()
    running: dict[asyncio.Future[T], _Call] = {}
    answers: list[T] = []
    errors: list[BaseException] = []

    def launch(node: bytes, from_fallback: bool = False) -> None:
        deadline = math.inf
        if hedges and waiting:
            assert hedging is not None
            deadline = loop.time() + hedging.delay(node, waiting[0])
        call = _Call(node, loop.time(), deadline, from_fallback)
        running[asyncio.ensure_future(read(node))] = call

    def top_up() -> None:
        """Keep enough calls going to get `wanted` answers, hedged calls aside."""
        going = sum(1 for call in running.values() if not call.hedged)
        for _ in range(wanted - len(answers) - going):
            if waiting:
                launch(waiting.pop(0))
            elif spare and all(call.from_fallback for call in running.values()):
                launch(spare.pop(0), from_fallback=True)
            else:
                return

    try:
        top_up()
        while running:
            deadline = min(c.deadline for c in running.values()) if waiting else math.inf
            timeout = None if deadline == math.inf else max(0.0, deadline - loop.time())
            done, _ = await asyncio.wait(
                running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                assert hedging is not None  # only hedged reads have a deadline
                late = min(running.values(), key=lambda c: c.deadline)
                stalled = not late.rationed or hedging.latencies.is_slow(late.node)
                if stalled or hedging.budget.take():
                    hedging.count_started()
                    late.hedged, late.deadline = True, math.inf
                    launch(waiting.pop(0))
                else:
                    late.rationed = False
                    late.deadline = loop.time() + hedging.delay(late.node, waiting[0])
                continue
            failed: list[tuple[bytes, BaseException]] = []
            for task in done:
                call = running.pop(task)
                try:
                    answer = task.result()
                except failures as error:
                    errors.append(error)
                    failed.append((call.node, error))
                    continue
                answers.append(answer)
                if hedging is not None:
                    hedging.latencies.record(call.node, loop.time() - call.started)
            done_reading = len(answers) >= wanted
            if done_reading:
                _count_losers(hedging, running.values())
            else:
                top_up()  # before on_failure: the next node is asked at once
            if on_failure is not None:
                for node, failure in failed:
                    await on_failure(node, failure)
            if done_reading:
                return Answers(answers[:wanted], errors)
    finally:
        for task in running:
            task.cancel()
            task.add_done_callback(_retrieve_exception)
    return Answers(answers, errors)


def _count_losers(hedging: Hedging | None, unfinished: Iterable[_Call]) -> None:
    """The calls a hedge was started for and that are still running lost to it."""
    losers = [call.node for call in unfinished if call.hedged]
    if hedging is None or not losers:
        return
    hedging.count_won()
    for node in losers:
        hedging.latencies.mark_slow(node)


def _retrieve_exception(task: asyncio.Future) -> None:
    """Mark a cancelled call's failure as seen, so it is never reported as lost."""
    if not task.cancelled():
        task.exception()


def expose_hedging(workers: Workers, reads: str, hedging: Hedging) -> None:
    """`<reads>-read-hedging` (settable) and the hedge counters as worker variables."""
    workers.variable(
        f"{reads}-read-hedging",
        lambda: hedging.enabled,
        bool_setter(lambda value: setattr(hedging, "enabled", value)),
        f"ask one more node when a {reads} read is late",
    )
    workers.variable(f"{reads}-hedges-started", lambda: hedging.started)
    workers.variable(f"{reads}-hedges-won", lambda: hedging.won)
