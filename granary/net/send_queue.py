"""Frames waiting to be written, highest priority first."""

from __future__ import annotations

import asyncio
import collections

from granary.net.messages import PRIORITIES

Frame = bytes | bytearray

# Small frames are written together (one TLS record, one syscall) up to this size.
BATCH_BYTES = 64 * 1024


class SendQueue:
    """One FIFO per priority. Large bodies arrive here already cut into chunks,
    so a HIGH frame waits at most for one batch already taken."""

    def __init__(self) -> None:
        self._queues: tuple[collections.deque[Frame], ...] = tuple(
            collections.deque() for _ in PRIORITIES
        )
        self._ready = asyncio.Event()

    def put(self, frame: Frame, priority: int) -> None:
        self._queues[priority].append(frame)
        self._ready.set()

    async def next_batch(self) -> list[Frame]:
        """The next frames to write, in priority order, about BATCH_BYTES at most."""
        while True:
            batch: list[Frame] = []
            size = 0
            for queue in self._queues:
                while queue and size < BATCH_BYTES:
                    frame = queue.popleft()
                    batch.append(frame)
                    size += len(frame)
            if batch:
                return batch
            self._ready.clear()
            await self._ready.wait()
