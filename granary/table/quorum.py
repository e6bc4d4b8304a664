"""Run one call on several nodes and return once a quorum has answered."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from granary.net.hedging import Hedging, hedged_read

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
            failure = task.exception()
            if failure is None:
                results.append(task.result())
            else:
                errors.append(failure)
        if len(results) + len(pending) < quorum:
            break
    for task in pending:
        task.add_done_callback(retrieve_exception)
    if len(results) < quorum:
        raise QuorumError(quorum, len(results), errors)
    return results[:quorum]


def retrieve_exception(task: asyncio.Future) -> None:
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
    asked only when a nearer one fails or, with `hedging` on, is late (see
    `hedged_read`).
    """
    if quorum > len(nodes):
        raise QuorumError(quorum, 0, [])
    if len(nodes) == 1:
        return await call_quorum(nodes, call, quorum)
    got = await hedged_read(nodes, call, hedging, wanted=quorum)
    if len(got.answers) < quorum:
        raise QuorumError(quorum, len(got.answers), got.errors)
    return got.answers
