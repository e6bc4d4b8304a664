"""The primary process's side of its S3 workers: start, watch, restart, stop.

Each worker has a slot (1..count; the primary is 0) and a control channel.
While a worker lives, the primary's layout manager counts its writes in
flight and its read version (it acks no layout version a worker's write may
still miss, and lets no version retire that a worker still reads); the
worker learns every peer the primary meets, and sends what it counted
(`samples`, merged into the node's /metrics). When one dies, the uploads it
was running are aborted and its half-written block files removed before its
slot starts again, and the kernel has already released its locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping

import msgspec

from granary.config import Config
from granary.layout.manager import LayoutManager
from granary.layout.view import ProcessProgress
from granary.model.objects import Objects
from granary.net.hedging import Hedging
from granary.net.peering import Peering
from granary.processes.control import (
    Channel,
    Kick,
    LayoutUpdate,
    Message,
    MetricsSnapshot,
    Peers,
    Progress,
    Ready,
    Serve,
    Start,
    Switches,
)
from granary.processes.spawn import WorkerProcess, exec_worker, exit_code
from granary.table.quorum import QuorumError
from granary.table.table import ConditionalConflict
from granary.telemetry import prometheus

log = logging.getLogger("granary.processes")

START_TIMEOUT_SECS = 60.0
STOP_GRACE_SECS = 15.0
RESTART_DELAYS_SECS = (0.5, 1.0, 2.0, 5.0, 10.0)
"""Between two starts of a slot whose worker keeps dying; reset once one serves."""


class S3Workers:
    def __init__(
        self,
        config: Config,
        count: int,
        layout: LayoutManager,
        peering: Peering,
        objects: Objects,
        kicks: Mapping[str, Callable[[], None]],
        forked: list[WorkerProcess],
        hedging: Mapping[str, Hedging],
    ) -> None:
        """`forked`: workers forked before the node started, for the first slots;
        `hedging`: the primary's read hedging by kind, whose switches workers follow."""
        self.config = config
        self.count = count
        self._forked = dict(enumerate(forked, start=1))
        self.layout = layout
        self.peering = peering
        self.objects = objects
        self.kicks = kicks
        self.hedging = hedging
        self.restarts = 0
        self.samples = prometheus.NodeSamples()  # what the workers counted
        self._channels: dict[int, Channel] = {}
        self._processes: dict[int, int] = {}  # slot -> pid
        self._ready: dict[int, asyncio.Event] = {}
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self._serve_now = False
        self._encoder = msgspec.msgpack.Encoder()
        layout.on_change(self._send_layout)
        peering.netapp.add_listener(self._send_peer, lambda node: None)
        for hedged in hedging.values():
            hedged.on_switch(lambda _: self._send_to_all(self._switches()))

    @property
    def pids(self) -> list[int]:
        return sorted(self._processes.values())

    async def start(self, port: int) -> None:
        """Start every worker on the S3 port `port`; return once each is ready to
        serve (see `serve`)."""
        for slot in range(1, self.count + 1):
            self._ready[slot] = asyncio.Event()
            self._tasks.append(asyncio.ensure_future(self._keep_running(slot, port)))
        waits = [asyncio.ensure_future(e.wait()) for e in self._ready.values()]
        _, pending = await asyncio.wait(waits, timeout=START_TIMEOUT_SECS)
        for wait in pending:
            wait.cancel()
        if pending:
            log.error("%d S3 worker process(es) not ready yet", len(pending))

    async def _keep_running(self, slot: int, port: int) -> None:
        attempt = 0
        while not self._stopping:
            try:
                served = await self._run_once(slot, port)
            except OSError as error:  # could not start it (fork, file or socket limits)
                log.error("S3 worker %d could not start: %s", slot, error)
                served = False
            if self._stopping:
                return
            self.restarts += 1
            attempt = 0 if served else attempt + 1
            await self._recover_uploads(slot)
            await asyncio.sleep(RESTART_DELAYS_SECS[min(attempt, len(RESTART_DELAYS_SECS) - 1)])

    async def _run_once(self, slot: int, port: int) -> bool:
        """Run slot's worker until it exits; whether it was ready to serve."""
        process = self._forked.pop(slot, None) or exec_worker()
        self._processes[slot] = process.pid
        ready = False
        try:
            channel = await Channel.open(process.control)
            self._channels[slot] = channel
            # No await from here to the send: the worker starts with this history,
            # and is counted where it stands in it until it reports otherwise.
            layout = self.layout
            progress = ProcessProgress(layout.current.version, layout.read_version())
            layout.report_process(slot, progress)
            peers = self.peering.peer_status()
            channel.send(
                Start(
                    slot,
                    msgspec.json.encode(self.config),
                    self._encoder.encode(layout.history),
                    port,
                    [(peer.node_id, peer.addr) for peer in peers],
                    [peer.node_id for peer in peers if peer.up],
                )
            )
            channel.send(self._switches())
            while (message := await channel.receive()) is not None:
                ready |= self._handle(slot, message)
        except Exception as error:  # a broken channel: the worker is restarted
            log.error("S3 worker %d: control channel failed: %s", slot, error)
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
        finally:
            if (opened := self._channels.pop(slot, None)) is not None:
                opened.close()
            else:
                process.control.close()
        code = await exit_code(process.pid)
        self.samples.ended(process.pid)
        del self._processes[slot]
        self.layout.report_process(slot, None)
        self.objects.model.db.forget_dead_readers()
        if not self._stopping:
            log.error("S3 worker %d (pid %d) exited with status %s", slot, process.pid, code)
            blocks = self.objects.model.blocks
            await blocks.sweep_temp_files(before=time.time(), pid=process.pid)
        return ready

    def _handle(self, slot: int, message) -> bool:
        match message:
            case Ready():
                self._ready[slot].set()
                if self._serve_now:  # a worker started again while the node serves
                    self._channels[slot].send(Serve())
                return True
            case Progress(oldest_write=oldest_write, read_version=read_version):
                self.layout.report_process(slot, ProcessProgress(oldest_write, read_version))
            case MetricsSnapshot(samples=data):
                self.samples.update(self._processes[slot], prometheus.read_snapshot(data))
            case Kick(worker=name):
                kick = self.kicks.get(name)
                if kick is not None:
                    kick()
        return False

    def serve(self) -> None:
        """The node serves: every worker opens its socket (and any started later)."""
        self._serve_now = True
        for channel in self._channels.values():
            channel.send(Serve())

    def _send_layout(self, history) -> None:
        if self._channels:  # else no encoding
            self._send_to_all(LayoutUpdate(self._encoder.encode(history)))

    def _send_peer(self, node: bytes, addr: str) -> None:
        """The primary met a peer (or found it at a new address): the workers dial it."""
        self._send_to_all(Peers([(node, addr)]))

    def _switches(self) -> Switches:
        return Switches({kind: hedged.enabled for kind, hedged in self.hedging.items()})

    def _send_to_all(self, message: Message) -> None:
        for channel in self._channels.values():
            channel.send(message)

    async def _recover_uploads(self, slot: int) -> None:
        """Abort the uploads a dead worker left unfinished (retried at the next start)."""
        interrupted = self.objects.interrupted_uploads(slot)
        if not interrupted:
            return
        try:
            recovered = await self.objects.recover_interrupted(interrupted)
        except (QuorumError, ConditionalConflict) as error:
            log.warning("uploads of S3 worker %d not recovered yet: %s", slot, error)
            return
        log.info("aborted %d upload(s) of S3 worker %d", recovered, slot)

    async def stop(self) -> None:
        """Ask every worker to finish its requests and stop; kill the late ones."""
        self._stopping = True
        for forked in self._forked.values():  # never started: the closed channel stops it
            forked.control.close()
        for pid in self._processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=STOP_GRACE_SECS)
            if late:
                for pid in self._processes.values():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                await asyncio.wait(late, timeout=5)
