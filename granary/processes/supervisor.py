"""The primary process's side of its S3 workers: start, watch, restart, stop.

Each worker has a slot (1..count; the primary is 0) and a control channel.
While a worker lives, the primary's layout manager counts its writes in
flight (it acks no layout version a worker's write may still miss); when
one dies, the uploads it was running are aborted before its slot starts
again, and the kernel has already released its locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping

import msgspec

from granary.config import Config
from granary.layout.manager import LayoutManager
from granary.model.objects import Objects
from granary.processes.control import (
    Channel,
    Kick,
    LayoutUpdate,
    Ready,
    Serve,
    Start,
    WriteProgress,
)
from granary.table.quorum import QuorumError

log = logging.getLogger("granary.processes")

START_TIMEOUT_SECS = 60.0
STOP_GRACE_SECS = 15.0
RESTART_DELAYS_SECS = (0.5, 1.0, 2.0, 5.0, 10.0)
"""Between two starts of a slot whose worker keeps dying; reset once one serves."""


def bound_socket(host: str, port: int) -> socket.socket:
    """A socket of the S3 port for one process, bound but not listening yet: it opens
    when its process serves.

    Each process has its own socket (SO_REUSEPORT): one socket shared by every
    process would let whichever process wakes first accept a whole burst of
    connections (uvloop accepts until the queue is empty), so 16 uploads opened
    at once could all land on one process; the kernel spreads connections over
    the sockets by a hash of their addresses. A worker's socket closes with it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def free_s3_port(host: str, port: int) -> int:
    """`port` (0: a free one), refused (EADDRINUSE) if anything holds it:
    SO_REUSEPORT alone would let another node of this user share it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.create_server((host, port), family=family) as probe:
        return probe.getsockname()[1]


class S3Workers:
    def __init__(
        self,
        config: Config,
        count: int,
        layout: LayoutManager,
        objects: Objects,
        kicks: Mapping[str, Callable[[], None]],
    ) -> None:
        self.config = config
        self.count = count
        self.layout = layout
        self.objects = objects
        self.kicks = kicks
        self.restarts = 0
        self._channels: dict[int, Channel] = {}
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._ready: dict[int, asyncio.Event] = {}
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self._serve_now = False
        self._encoder = msgspec.msgpack.Encoder()
        layout.on_change(self._send_layout)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes.values()]

    async def start(self, host: str, port: int) -> None:
        """Start every worker, each with a socket of host:port; return once each is
        ready to serve (see `serve`)."""
        for slot in range(1, self.count + 1):
            self._ready[slot] = asyncio.Event()
            self._tasks.append(asyncio.ensure_future(self._keep_running(slot, host, port)))
        waits = [asyncio.ensure_future(e.wait()) for e in self._ready.values()]
        _, pending = await asyncio.wait(waits, timeout=START_TIMEOUT_SECS)
        for wait in pending:
            wait.cancel()
        if pending:
            log.error("%d S3 worker process(es) not ready yet", len(pending))

    async def _keep_running(self, slot: int, host: str, port: int) -> None:
        attempt = 0
        while not self._stopping:
            try:
                served = await self._run_once(slot, host, port)
            except OSError as error:  # could not start it (fork, file or socket limits)
                log.error("S3 worker %d could not start: %s", slot, error)
                served = False
            if self._stopping:
                return
            self.restarts += 1
            attempt = 0 if served else attempt + 1
            await self._recover_uploads(slot)
            await asyncio.sleep(RESTART_DELAYS_SECS[min(attempt, len(RESTART_DELAYS_SECS) - 1)])

    async def _run_once(self, slot: int, host: str, port: int) -> bool:
        """Run slot's worker until it exits; whether it served requests."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock = bound_socket(host, port)
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "granary.processes.worker",
                    str(sock.fileno()),
                    str(theirs.fileno()),
                    pass_fds=(sock.fileno(), theirs.fileno()),
                )
            finally:
                sock.close()  # the worker's own now: it closes with the worker
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._processes[slot] = process
        served = False
        try:
            channel = await Channel.open(ours)
            self._channels[slot] = channel
            # No await from here to the send: the worker starts with this history,
            # and its writes are counted at its version until it reports otherwise.
            self.layout.report_process_writes(slot, self.layout.current.version)
            channel.send(
                Start(
                    slot,
                    msgspec.json.encode(self.config),
                    self._encoder.encode(self.layout.history),
                )
            )
            while (message := await channel.receive()) is not None:
                served |= self._handle(slot, message)
        except Exception as error:  # a broken channel: the worker is restarted
            log.error("S3 worker %d: control channel failed: %s", slot, error)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        finally:
            if (opened := self._channels.pop(slot, None)) is not None:
                opened.close()
        code = await process.wait()
        del self._processes[slot]
        self.layout.report_process_writes(slot, None)
        self.objects.model.db.forget_dead_readers()
        if not self._stopping:
            log.error("S3 worker %d (pid %d) exited with status %s", slot, process.pid, code)
        return served

    def _handle(self, slot: int, message) -> bool:
        match message:
            case Ready():
                self._ready[slot].set()
                if self._serve_now:  # a worker started again while the node serves
                    self._channels[slot].send(Serve())
                return True
            case WriteProgress(oldest_version=version):
                self.layout.report_process_writes(slot, version)
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
        if not self._channels:
            return
        update = LayoutUpdate(self._encoder.encode(history))
        for channel in self._channels.values():
            channel.send(update)

    async def _recover_uploads(self, slot: int) -> None:
        """Abort the uploads a dead worker left unfinished (retried at the next start)."""
        interrupted = self.objects.interrupted_uploads(slot)
        if not interrupted:
            return
        try:
            recovered = await self.objects.recover_interrupted(interrupted)
        except QuorumError as error:
            log.warning("uploads of S3 worker %d not recovered yet: %s", slot, error)
            return
        log.info("aborted %d upload(s) of S3 worker %d", recovered, slot)

    async def stop(self) -> None:
        """Ask every worker to finish its requests and stop; kill the late ones."""
        self._stopping = True
        for process in self._processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=STOP_GRACE_SECS)
            if late:
                for process in self._processes.values():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.pid, signal.SIGKILL)
                await asyncio.wait(late, timeout=5)
