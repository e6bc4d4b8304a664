"""Keeping in touch with the cluster: which peers exist, which are up, how far.

Peers come from the config's bootstrap list, discovery sources polled every
`discovery.REFRESH_SECS` (a bootstrap peer named by DNS is one: it stands for
every address the name resolves to; Kubernetes custom resources another), the
persisted peer list, gossip (connected peers swap the lists of peers they are
connected to) and explicit `connect()` calls. Every known peer that is not
connected is redialed with capped, jittered exponential backoff. Connected peers
are pinged at HIGH priority: the round trips give a smoothed RTT per peer, and a
peer that misses `max_missed_pings` in a row is disconnected, hence down, hence
redialed.

An S3 worker process runs a Peering without gossip: it learns the peers from
its node's primary (`learn`) and keeps its own links to them, pinged, so its
calls go to peers it has heard from lately, nearest first.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from granary.net.addresses import NODE_ID_SIZE, parse_addr, parse_peer
from granary.net.connection import Reply
from granary.net.discovery import REFRESH_SECS, DiscoveryError, DiscoverySource, dns
from granary.net.errors import PeerUnavailable, RpcError
from granary.net.messages import HIGH
from granary.net.peer_list import PEER_LIST_FILE, load_peer_list, save_peer_list
from granary.net.rpc import NetApp

log = logging.getLogger("granary.net")

PING_ENDPOINT = "granary.net/ping"
PEERS_ENDPOINT = "granary.net/peers"
RTT_SMOOTHING = 0.125  # weight of a new sample, as TCP's SRTT

PeerEntries = list[tuple[bytes, str]]
_peers_decoder = msgspec.msgpack.Decoder(PeerEntries)


@dataclass(frozen=True)
class PeerInfo:
    node_id: bytes
    addr: str
    up: bool
    last_seen: float | None  # Unix time of the last connection or answered ping
    rtt: float | None  # smoothed ping round trip, seconds


@dataclass
class _Backoff:
    failures: int = 0
    retry_at: float = 0.0  # time.monotonic()
    dialing: bool = False


@dataclass
class _Peer:
    addr: str
    backoff: _Backoff = field(default_factory=_Backoff)
    last_seen: float | None = None
    rtt: float | None = None
    missed: int = 0
    pinging: bool = False


class Peering:
    """Discovery, pings, failure detection and reconnection over a NetApp."""

    def __init__(
        self,
        netapp: NetApp,
        *,
        metadata_dir: Path | None = None,
        bootstrap_peers: Sequence[str] = (),
        ping_interval: float = 10.0,
        ping_timeout: float = 10.0,
        max_missed_pings: int = 4,
        gossip_interval: float = 60.0,
        retry_min: float = 1.0,
        retry_max: float = 60.0,
        gossip: bool = True,
        discovery: Sequence[DiscoverySource] = (),
    ) -> None:
        self.netapp = netapp
        self._gossip = gossip
        self._bootstrap = [parse_peer(peer) for peer in bootstrap_peers]
        self._path = metadata_dir / PEER_LIST_FILE if metadata_dir is not None else None
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._max_missed = max_missed_pings
        self._gossip_interval = gossip_interval
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._peers: dict[bytes, _Peer] = {}
        self._anonymous: dict[str, _Backoff] = {}  # addresses whose node id is still unknown
        self._sources = list(discovery)  # bootstrap peers named by DNS are added at start
        self._own_addrs: set[str] = set()  # addresses that turned out to be this node
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        netapp.endpoint(PING_ENDPOINT, self._on_ping)
        netapp.endpoint(PEERS_ENDPOINT, self._on_peers)
        netapp.add_listener(self._peer_up, self._peer_down)

    async def start(self) -> None:
        if self._path is not None:
            for node, addr in load_peer_list(self._path).items():
                self._remember(node, addr, persist=False)
        for maybe_node, addr in self._bootstrap:
            host, port = parse_addr(addr)
            if maybe_node is not None:
                self._remember(maybe_node, addr, persist=False)
            elif dns.is_name(host):
                self._sources.append(dns.DnsName(host, port))
            else:
                self._dial_anonymous(addr)
        self._persist()
        if self._sources:
            self._spawn(self._discovery_loop())
        self._spawn(self._reconnect_loop())
        self._spawn(self._ping_loop())
        if self._gossip:
            self._spawn(self._gossip_loop())

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def connect(self, peer: str) -> bytes:
        """Connect to `ID@host:port` (or `host:port`), remember it, return its id."""
        node, addr = parse_peer(peer)
        host, port = parse_addr(addr)
        found = await self.netapp.connect(node, host, port)
        if found != self.netapp.node_id:
            self._remember(found, addr)
        return found

    def learn(self, entries: PeerEntries) -> None:
        """Dial these (node id, address) pairs too, as if a peer had gossiped them."""
        self._merge(entries)

    def peer_status(self) -> list[PeerInfo]:
        """Every known peer (this node excluded), by node id."""
        return [
            PeerInfo(node, peer.addr, self.netapp.is_connected(node), peer.last_seen, peer.rtt)
            for node, peer in sorted(self._peers.items())
        ]

    def rtt(self, node: bytes) -> float | None:
        """Smoothed round trip to `node` in seconds (0 for this node), None if unmeasured."""
        if node == self.netapp.node_id:
            return 0.0
        peer = self._peers.get(node)
        return peer.rtt if peer is not None else None

    def by_distance(self, nodes: Iterable[bytes]) -> list[bytes]:
        """`nodes` nearest first: this node, up peers by RTT, unmeasured, then down."""

        def distance(node: bytes) -> tuple[int, float]:
            rtt = self.rtt(node)
            if not self.netapp.is_connected(node):
                return (2, 0.0)
            return (0, rtt) if rtt is not None else (1, 0.0)

        return sorted(nodes, key=distance)

    # -- membership

    def _remember(self, node: bytes, addr: str, *, persist: bool = True) -> bool:
        """Record `addr` as where `node` is reached; a new address resets the backoff."""
        if node == self.netapp.node_id:
            return False
        peer = self._peers.get(node)
        if peer is None:
            self._peers[node] = _Peer(addr)
        elif peer.addr != addr:
            peer.addr = addr
            peer.backoff = _Backoff()
        else:
            return False
        self._wake.set()
        if persist:
            self._persist()
        return True

    def _persist(self) -> None:
        if self._path is None:
            return
        known = {node: peer.addr for node, peer in self._peers.items()}
        try:
            save_peer_list(self._path, known)
        except OSError as exc:
            log.warning("cannot save the peer list to %s: %s", self._path, exc)

    def _peer_up(self, node: bytes, addr: str) -> None:
        self._remember(node, addr)
        peer = self._peers[node]
        peer.backoff = _Backoff()
        peer.missed = 0
        peer.last_seen = time.time()
        if self._gossip:
            self._spawn(self._exchange_peers(node))

    def _peer_down(self, node: bytes) -> None:
        peer = self._peers.get(node)
        if peer is not None:
            peer.backoff.retry_at = time.monotonic() + self._delay(0)
            self._wake.set()

    def _dial_anonymous(self, addr: str) -> None:
        """Dial `addr` until it answers, unless a known peer or this node is there."""
        if addr in self._own_addrs or addr in self._anonymous:
            return
        if all(peer.addr != addr for peer in self._peers.values()):
            self._anonymous[addr] = _Backoff()
            self._wake.set()

    async def _discovery_loop(self) -> None:
        """Dial what every discovery source finds, now and every `REFRESH_SECS` (a
        source that cannot answer is asked again then)."""
        while True:
            for source in self._sources:
                try:
                    found = await source.discover()
                except DiscoveryError as exc:
                    log.warning("discovery (%s): %s", source.name, exc)
                    continue
                for node, addr in found:
                    if node is None:
                        self._dial_anonymous(addr)
                    else:
                        self._merge([(node, addr)])
            await asyncio.sleep(REFRESH_SECS)

    # -- reconnection

    async def _reconnect_loop(self) -> None:
        while True:
            now = time.monotonic()
            wait = self._retry_max
            due: list[tuple[bytes | None, str, _Backoff]] = [
                (node, peer.addr, peer.backoff)
                for node, peer in self._peers.items()
                if not self.netapp.is_connected(node)
            ]
            due += [(None, addr, backoff) for addr, backoff in self._anonymous.items()]
            for node, addr, backoff in due:
                if backoff.dialing:
                    continue
                if backoff.retry_at <= now:
                    backoff.dialing = True
                    self._spawn(self._dial(node, addr, backoff))
                else:
                    wait = min(wait, backoff.retry_at - now)
            self._wake.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _dial(self, node: bytes | None, addr: str, backoff: _Backoff) -> None:
        try:
            host, port = parse_addr(addr)
            found = await self.netapp.connect(node, host, port)
        except (PeerUnavailable, ValueError) as exc:
            backoff.failures += 1
            backoff.retry_at = time.monotonic() + self._delay(backoff.failures)
            level = logging.INFO if backoff.failures == 1 else logging.DEBUG
            log.log(level, "cannot reach %s (attempt %d): %s", addr, backoff.failures, exc)
        else:
            if node is None:
                self._anonymous.pop(addr, None)
            if found == self.netapp.node_id:
                self._own_addrs.add(addr)
        finally:
            backoff.dialing = False
            self._wake.set()

    def _delay(self, failures: int) -> float:
        """Exponential in the failures, capped, with half of it random (equal jitter)."""
        ceiling = min(self._retry_max, self._retry_min * 2.0**failures)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    # -- pings

    async def _ping_loop(self) -> None:
        """Ping every connected peer each interval; a peer still owing an answer is
        skipped, so one silent peer delays neither the others' pings nor this loop."""
        while True:
            await asyncio.sleep(self._ping_interval)
            for node in self.netapp.connected_peers():
                peer = self._peers.get(node)
                if peer is not None and not peer.pinging:
                    peer.pinging = True
                    self._spawn(self._ping(node, peer))

    async def _ping(self, node: bytes, peer: _Peer) -> None:
        try:
            await self._ping_once(node, peer)
        finally:
            peer.pinging = False

    async def _ping_once(self, node: bytes, peer: _Peer) -> None:
        start = time.monotonic()
        try:
            await self.netapp.call(
                node, PING_ENDPOINT, b"", priority=HIGH, timeout=self._ping_timeout
            )
        except PeerUnavailable:
            peer.missed += 1
            if peer.missed >= self._max_missed and self.netapp.is_connected(node):
                log.warning("node %s missed %d pings: down", node.hex()[:16], peer.missed)
                await self.netapp.disconnect(node)
            return
        except RpcError:
            pass  # it answered, with an error: it is alive
        sample = time.monotonic() - start
        peer.rtt = sample if peer.rtt is None else peer.rtt + RTT_SMOOTHING * (sample - peer.rtt)
        peer.last_seen = time.time()
        peer.missed = 0

    async def _on_ping(self, _: bytes, body: bytes, stream: AsyncIterator[bytes] | None) -> Reply:
        return b"", None

    # -- gossip

    async def _gossip_loop(self) -> None:
        while True:
            await asyncio.sleep(self._gossip_interval)
            await asyncio.gather(
                *(self._exchange_peers(node) for node in self.netapp.connected_peers())
            )

    async def _exchange_peers(self, node: bytes) -> None:
        try:
            reply, _ = await self.netapp.call(
                node,
                PEERS_ENDPOINT,
                self._shared_peers(),
                priority=HIGH,
                timeout=self._ping_timeout,
            )
            self._merge(_peers_decoder.decode(reply))
        except (RpcError, msgspec.DecodeError) as exc:
            log.debug("peer list exchange with %s failed: %s", node.hex()[:16], exc)

    async def _on_peers(self, _: bytes, body: bytes, stream: AsyncIterator[bytes] | None) -> Reply:
        self._merge(_peers_decoder.decode(body))
        return self._shared_peers(), None

    def _shared_peers(self) -> bytes:
        """The peers we are connected to, with their addresses: those we vouch for."""
        entries = [
            (node, peer.addr)
            for node, peer in self._peers.items()
            if self.netapp.is_connected(node)
        ]
        return msgspec.msgpack.encode(entries)

    def _merge(self, entries: PeerEntries) -> None:
        changed = False
        for node, addr in entries:
            if len(node) != NODE_ID_SIZE or self.netapp.is_connected(node):
                continue
            try:
                parse_addr(addr)
            except ValueError:
                continue
            changed |= self._remember(node, addr, persist=False)
        if changed:
            self._persist()

    def _spawn(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
