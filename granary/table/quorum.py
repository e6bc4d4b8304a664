"""Run one call on several nodes and return once a quorum has answered."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from granary.net.hedging import Hedging

T = TypeVar("T")


class QuorumError(Exception):
    """Fewer nodes than the quorum answered successfully."""

    def __init__(self, quorum: int, successes: int, errors: list[BaseException]) -> None:
        self.quorum = quorum
        self.successes = successes
        self.errors = errors
        detail = "; ".join(repr(e) for e in errors[:3])
        super().__init__(f"quorum of {quorum} not reached ({successes} ok): {detail}")


async def call_quorum(
    nodes: Sequence[bytes], call: Callable[[bytes], Awaitable[T]], quorum: int
) -> list[T]:
    """Call every node at once; return the first `quorum` results.

    The calls still running when the quorum is reached go on in the
    background, so every replica eventually receives a write.
    """
    if quorum > len(nodes):
        raise QuorumError(quorum, 0, [])
    if len(nodes) == 1:
        try:
            return [await call(nodes[0])]
        except Exception as error:
            raise QuorumError(quorum, 0, [error]) from error
    tasks = [asyncio.ensure_future(call(node)) for node in nodes]
    results: list[T] = []
    errors: list[BaseException] = []
    pending = set(tasks)
    while pending and len(results) < quorum:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task.exception() is None:
                results.append(task.result())
            else:
                errors.append(task.exception())
        if len(results) + len(pending) < quorum:
            break
    for task in pending:
        task.add_done_callback(_retrieve_exception)
    if len(results) < quorum:
        raise QuorumError(quorum, len(results), errors)
    return results[:quorum]


def _retrieve_exception(task: asyncio.Future) -> None:
    """Mark a background call's failure as seen; anti-entropy repairs it later."""
    if not task.cancelled():
        task.exception()


async def call_nearest(
    nodes: Sequence[bytes],
    call: Callable[[bytes], Awaitable[T]],
    quorum: int,
    hedging: Hedging | None = None,
) -> list[T]:
    """Call the `quorum` first nodes (nearest first); each failure brings in the next.

    Reads need no more answers than the quorum, so the farther replicas are
    asked only when a nearer one fails or, with `hedging` on, is late: once a
    node has not answered within its hedge delay, the next node is asked too
    (within the hedge budget; a node still silent after a second delay is
    hedged regardless, it is stalled). The nodes that lose to a hedge are
    asked last by the next reads for a while.
    """
    if quorum > len(nodes):
        raise QuorumError(quorum, 0, [])
    if len(nodes) == 1:
        return await call_quorum(nodes, call, quorum)
    loop = asyncio.get_running_loop()
    hedges = hedging is not None and hedging.enabled
    waiting = hedging.latencies.order(nodes) if hedging is not None else list(nodes)
    if hedging is not None:
        hedging.budget.read()
    running: dict[asyncio.Future, _Call] = {}
    results: list[T] = []
    errors: list[BaseException] = []
    hedged = False

    def launch(node: bytes) -> None:
        deadline = math.inf
        if hedges and waiting:
            deadline = loop.time() + hedging.delay(node, waiting[0])
        running[asyncio.ensure_future(call(node))] = _Call(node, loop.time(), deadline)

    first, waiting = waiting[:quorum], waiting[quorum:]
    for node in first:
        launch(node)
    try:
        while running:
            deadline = min(c.deadline for c in running.values()) if waiting else math.inf
            timeout = None if deadline == math.inf else max(0.0, deadline - loop.time())
            done, _ = await asyncio.wait(
                running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                late = min(running.values(), key=lambda c: c.deadline)
                stalled = not late.rationed or hedging.latencies.is_slow(late.node)
                if stalled or hedging.budget.take():
                    hedging.started += 1
                    hedged = True
                    late.deadline = math.inf
                    launch(waiting.pop(0))
                else:
                    late.rationed = False
                    late.deadline = loop.time() + hedging.delay(late.node, waiting[0])
                continue
            for task in done:
                answered = running.pop(task)
                if task.exception() is None:
                    results.append(task.result())
                    if hedging is not None:
                        hedging.latencies.record(answered.node, loop.time() - answered.started)
                else:
                    errors.append(task.exception())
                    if waiting:
                        launch(waiting.pop(0))
            if len(results) >= quorum:
                if hedged and running:
                    hedging.won += 1
                    for late in running.values():
                        hedging.latencies.mark_slow(late.node)
                return results[:quorum]
    finally:
        for task in running:
            task.cancel()
            task.add_done_callback(_retrieve_exception)
    raise QuorumError(quorum, len(results), errors)


@dataclass
class _Call:
    """One node's call in `call_nearest`: when it started, when to hedge it."""

    node: bytes
    started: float
    deadline: float
    rationed: bool = True
