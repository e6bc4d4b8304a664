"""Peering over real sockets: gossip, failure detection, reconnection, the peer list."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from granary.net.peer_list import PEER_LIST_FILE, load_peer_list
from granary.net.peering import PING_ENDPOINT, PeerInfo, Peering
from granary.net.rpc import NetApp

SECRET = bytes(range(32))
FAST = {
    "ping_interval": 0.05,
    "ping_timeout": 0.5,
    "max_missed_pings": 3,
    "gossip_interval": 0.2,
    "retry_min": 0.02,
    "retry_max": 0.2,
}
Reply = tuple[bytes, AsyncIterator[bytes] | None]


def run(scenario: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(scenario, 60))


class Node:
    """A NetApp with its Peering, restartable with the same key and port."""

    def __init__(
        self, metadata_dir: Path | None = None, bootstrap: list[str] | None = None
    ) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.metadata_dir = metadata_dir
        self.bootstrap = bootstrap or []
        self.port = 0
        self.netapp: NetApp
        self.peering: Peering

    @property
    def id(self) -> bytes:
        return self.netapp.node_id

    @property
    def address(self) -> str:
        return f"{self.id.hex()}@127.0.0.1:{self.port}"

    async def start(self) -> Node:
        self.netapp = NetApp(self.key, SECRET, bind=("127.0.0.1", self.port), public_addr=None)
        self.peering = Peering(
            self.netapp, metadata_dir=self.metadata_dir, bootstrap_peers=self.bootstrap, **FAST
        )
        await self.netapp.start()
        self.port = self.netapp.port
        await self.peering.start()
        return self

    async def stop(self) -> None:
        await self.peering.stop()
        await self.netapp.stop()

    def status(self, other: Node) -> PeerInfo | None:
        return next((p for p in self.peering.peer_status() if p.node_id == other.id), None)


@contextlib.asynccontextmanager
async def running(*nodes: Node) -> AsyncIterator[None]:
    for node in nodes:
        await node.start()
    try:
        yield
    finally:
        for node in nodes:
            await node.stop()


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait for `condition`; the scenario's overall timeout bounds the wait."""
    while not condition():
        await asyncio.sleep(0.01)


def up(a: Node, b: Node) -> bool:
    info = a.status(b)
    return info is not None and info.up


def test_gossip_connects_a_to_the_peers_of_its_peers() -> None:
    async def scenario() -> None:
        a, b, c = Node(), Node(), Node()
        async with running(a, b, c):
            assert await b.peering.connect(c.address) == c.id
            assert await a.peering.connect(b.address) == b.id
            await eventually(lambda: a.netapp.is_connected(c.id) and c.netapp.is_connected(a.id))
            await eventually(lambda: up(a, c) and up(c, a))
            assert a.status(c).addr == f"127.0.0.1:{c.port}"  # type: ignore[union-attr]

    run(scenario())


def test_a_bootstrap_address_without_id_learns_the_id() -> None:
    async def scenario() -> None:
        b = Node()
        async with running(b):
            a = Node(bootstrap=[f"127.0.0.1:{b.port}"])
            async with running(a):
                await eventually(lambda: up(a, b))
                assert a.status(b).addr == f"127.0.0.1:{b.port}"  # type: ignore[union-attr]

    run(scenario())


def test_pings_measure_rtt_and_rank_nodes_by_distance() -> None:
    async def scenario() -> None:
        a, b, c = Node(), Node(), Node()
        async with running(a, b, c):
            await a.peering.connect(b.address)
            await eventually(lambda: a.peering.rtt(b.id) is not None)
            info = a.status(b)
            assert info is not None and info.rtt is not None and info.rtt > 0
            assert info.last_seen is not None
            assert a.peering.rtt(a.id) == 0.0
            assert a.peering.rtt(c.id) is None
            assert a.peering.by_distance([c.id, b.id, a.id]) == [a.id, b.id, c.id]

    run(scenario())


def test_a_stopped_peer_is_down_and_reconnected_when_it_returns() -> None:
    async def scenario() -> None:
        a, b = Node(), Node()
        async with running(a, b):
            await a.peering.connect(b.address)
            await eventually(lambda: up(a, b) and up(b, a))
            await b.stop()
            await eventually(lambda: not up(a, b))
            await b.start()  # same key, same port
            await eventually(lambda: up(a, b) and up(b, a))

    run(scenario())


def test_missed_pings_mark_a_peer_down_and_it_recovers() -> None:
    async def scenario() -> None:
        a, b = Node(), Node()
        async with running(a, b):
            await a.peering.connect(b.address)
            await eventually(lambda: up(a, b))
            answering = b.netapp._handlers[PING_ENDPOINT]

            async def silent(sender: bytes, body: bytes, stream: object) -> Reply:
                if sender == a.id:
                    await asyncio.Event().wait()
                return await answering(sender, body, None)

            b.netapp.endpoint(PING_ENDPOINT, silent)
            await eventually(lambda: not up(a, b))  # alive TCP, but no answer to pings
            b.netapp.endpoint(PING_ENDPOINT, answering)
            await eventually(lambda: up(a, b))

    run(scenario())


def test_the_peer_list_survives_a_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        a, b = Node(metadata_dir=tmp_path), Node()
        async with running(b):
            async with running(a):
                await a.peering.connect(b.address)
                await eventually(lambda: up(a, b))
            assert load_peer_list(tmp_path / PEER_LIST_FILE) == {b.id: f"127.0.0.1:{b.port}"}
            await eventually(lambda: not up(b, a))
            async with running(a):  # no bootstrap: only the persisted list
                assert a.status(b) is not None
                await eventually(lambda: up(a, b))

    run(scenario())


def test_connect_rejects_malformed_peer_strings() -> None:
    async def scenario() -> None:
        a = Node()
        async with running(a):
            for bad in ("nonsense", "abc@127.0.0.1:1", "127.0.0.1:0"):
                with pytest.raises(ValueError):
                    await a.peering.connect(bad)

    run(scenario())
