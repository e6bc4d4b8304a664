"""An S3 worker process: serves S3 on its own socket of the node's S3 port.

Forked by `granary server` before the node starts, or started later by the
primary's supervisor as `python -m granary.processes.worker <control fd>`
(see spawn.py); its settings, the layout and the S3 port come over the
control channel, never in argv or the environment. It builds the node's
`S3Stack` on the same folders, follows the primary's layout, reports its
writes in flight and the version it reads from, and forwards to the primary
the wake-ups its writes give to background workers, which run in the
primary only, and sends it what it counted (metrics) every second. In a
cluster it keeps its own links to the peers the primary knows (links that
serve no calls: peers route nothing to a worker), pings them, and opens the
S3 socket once it is linked to those the primary is. It stops on SIGTERM
(after its requests), and when the control channel closes: the primary is
gone. It ignores SIGINT, which a terminal sends to the whole process group:
the primary stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import uvloop

from granary.config import Config, parse_host_port
from granary.layout.history import LayoutHistory
from granary.layout.quorums import quorums
from granary.layout.view import FollowerLayout
from granary.model.key_secrets import SecretSealer
from granary.net.identity import load_or_create_identity
from granary.net.peering import Peering
from granary.net.rpc import NetApp
from granary.processes.control import (
    Channel,
    ControlError,
    Kick,
    LayoutUpdate,
    MetricsSnapshot,
    Peers,
    Progress,
    Ready,
    Serve,
    Start,
    Switches,
)
from granary.processes.sockets import bound_socket
from granary.processes.stack import LOCKS_DIR, SLOTS_FILE, S3Stack
from granary.server import rpc_secret_for, s3_http_limits
from granary.telemetry import prometheus
from granary.telemetry.logs import setup_logging
from granary.telemetry.loop_lag import watch_event_loop
from granary.util.files import PRIVATE_UMASK
from granary.util.process_locks import ProcessSlots
from granary.util.resources import tune_malloc
from granary.util.time import set_clock_offset

log = logging.getLogger("granary.processes")
METRICS_REPORT_SECS = 1.0


class KickEvent(asyncio.Event):
    """Stands for one of the primary's wake-up events: setting it tells the primary."""

    def __init__(self, name: str, channel: Channel) -> None:
        super().__init__()
        self.name = name
        self.channel = channel
        self._queued = False

    def set(self) -> None:
        if self._queued:
            return
        self._queued = True  # several sets within one loop turn: one message
        asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        self._queued = False
        self.channel.send(Kick(self.name))


def primary_wakeups(stack: S3Stack) -> Iterator[tuple[str, object, str]]:
    """(kick name, owner, attribute) of each wake-up event that the S3 path sets and
    a background worker of the primary waits on; the names are `Node.kicks`'."""
    blocks = stack.blocks
    yield "block-gc", blocks.refcounts, "became_deletable"
    yield "resync", blocks.resync, "wakeup"
    for table in stack.model.tables:
        yield f"table-queue:{table.name}", table, "queue_wakeup"


def worker_peering(config: Config) -> Peering:
    """Links to the node's peers that serve no calls, with the node's identity."""
    net = NetApp(
        load_or_create_identity(Path(config.metadata_dir)),
        rpc_secret_for(config),
        bind=parse_host_port(config.rpc_bind_addr, what="rpc_bind_addr"),
        public_addr=config.rpc_public_addr,
        handshake_timeout=config.rpc_handshake_timeout_secs,
        serves=False,
    )
    return Peering(net, ping_interval=config.ping_interval_secs, gossip=False)


async def connect_like_the_primary(peering: Peering, start: Start, timeout: float) -> None:
    """Wait (at most `timeout`) until linked to every peer the primary was linked to:
    a worker that served before would fail calls the primary's requests make."""
    peering.learn(start.peers)
    deadline = time.monotonic() + timeout
    missing = set(start.connected)
    while missing and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        missing = {node for node in missing if not peering.netapp.is_connected(node)}
    if missing:
        log.warning("S3 worker %d serves without links to %d peer(s) yet", start.slot, len(missing))


def build_stack(
    start: Start, config: Config, layout: FollowerLayout, peering: Peering, channel: Channel
) -> S3Stack:
    """The node's S3 stack, as the primary builds it, with the wake-ups of the
    primary's background workers forwarded to it."""
    stack = S3Stack(
        config,
        node_id=peering.netapp.node_id,
        net=peering.netapp,
        layout=layout,
        distances=peering,
        sealer=SecretSealer(bytes.fromhex(config.rpc_secret)) if config.rpc_secret else None,
        http_limits=s3_http_limits(config.s3_api),
        process=start.slot,
    )
    for name, owner, attribute in primary_wakeups(stack):
        setattr(owner, attribute, KickEvent(name, channel))
    return stack


async def run_worker(control: socket.socket) -> int:
    """Serve until told to stop; the process's exit status."""
    channel = await Channel.open(control)
    try:
        start = await channel.receive()
    except (OSError, ControlError):
        start = None
    if not isinstance(start, Start):
        log.error("S3 worker: the primary sent no start message")
        return 1
    config = msgspec.json.decode(start.config, type=Config)
    setup_logging(config.log_format)
    slots = ProcessSlots(Path(config.metadata_dir) / LOCKS_DIR / SLOTS_FILE)
    if not slots.claim(start.slot):  # held until this process ends
        log.error("S3 worker %d: another process still holds its slot", start.slot)
        return 1
    os.umask(PRIVATE_UMASK)
    set_clock_offset(config.clock_offset_ms)
    prometheus.install()
    decoder = msgspec.msgpack.Decoder(LayoutHistory)
    layout = FollowerLayout(
        decoder.decode(start.layout),
        quorums(config.replication_factor, config.consistency_mode)[1],
        lambda progress: channel.send(Progress(progress.oldest_write, progress.read_version)),
    )
    peering = worker_peering(config)
    stack = build_stack(start, config, layout, peering, channel)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    host, _ = parse_host_port(config.s3_api.api_bind_addr, what="s3_api.api_bind_addr")
    listening = bound_socket(host, start.s3_port)
    await peering.start()
    await connect_like_the_primary(peering, start, config.rpc_handshake_timeout_secs)
    channel.send(Ready())

    async def follow_primary() -> None:
        try:
            while (message := await channel.receive()) is not None:
                if isinstance(message, LayoutUpdate):
                    layout.follow(decoder.decode(message.layout))
                elif isinstance(message, Peers):
                    peering.learn(message.entries)
                elif isinstance(message, Switches):
                    follow_switches(stack, message)
                elif isinstance(message, Serve) and not stack.s3_server.serving:
                    await stack.s3_server.start(host, start.s3_port, sock=listening)
        except (OSError, ControlError) as error:
            log.error("S3 worker %d: control channel failed: %s", start.slot, error)
        finally:
            stopping.set()  # the primary is gone (or cannot be heard): stop

    follower = asyncio.ensure_future(follow_primary())
    trimmer = asyncio.ensure_future(stack.trim_memory_after_bursts(stopping))
    lag_watch = asyncio.ensure_future(watch_event_loop(stopping))
    reporter = asyncio.ensure_future(report_metrics(channel, stopping))
    await stopping.wait()
    await stack.s3_server.close()
    follower.cancel()
    await trimmer
    await lag_watch
    await reporter
    await peering.stop()
    await peering.netapp.stop()
    channel.send(MetricsSnapshot(prometheus.snapshot()))  # the counts of the last requests
    await channel.aclose()
    stack.close()
    return 0


async def report_metrics(channel: Channel, stop: asyncio.Event) -> None:
    """Send the primary what this process counted, every second (and once more
    after the last request: see run_worker)."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), METRICS_REPORT_SECS)
        channel.send(MetricsSnapshot(prometheus.snapshot()))


def follow_switches(stack: S3Stack, switches: Switches) -> None:
    """The primary's hedging switches (set through its admin API) apply here too."""
    hedging = {"table": stack.table_hedging, "block": stack.blocks.hedging}
    for kind, enabled in switches.hedging.items():
        if kind in hedging:
            hedging[kind].enabled = enabled


def main_forked(control: socket.socket) -> int:
    """A worker forked by `granary server` before it started (see spawn.py)."""
    # Ctrl-C reaches the whole process group: the primary stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return uvloop.run(run_worker(control))


def main(argv: list[str]) -> None:
    """A worker started in a fresh interpreter, in place of one that died."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging()
    tune_malloc()
    sys.exit(uvloop.run(run_worker(socket.socket(fileno=int(argv[1])))))


if __name__ == "__main__":
    main(sys.argv)
