"""A user-space TCP proxy in front of a node's RPC port: delays, cuts and heals links.

The kernel here has no netem qdisc, so `tc` cannot shape traffic; a node
announces its proxy's address as its rpc_public_addr instead, so every other
node reaches it through the proxy. Bytes wait the link's delay in each
direction and keep their order.

A link is an unordered pair of node names. To cut one link and keep the
others, a proxy asks `identify` which node dialed an accepted connection
(see `sockets.connection_owner`); a cut link's connections are dropped at
once (RST) and new ones are closed as soon as accepted. Connections from an
unknown source are never cut. `Links` is the shared state; change it only on
the proxies' event loop (see `Network` for use from other threads), then call
`Proxy.enforce` on each proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import combinations

from .sockets import connection_owner, group_members

Address = tuple[str, int]
Identify = Callable[[Address, Address], str | None]


class Links:
    """Which links are cut and how much one-way delay each adds."""

    def __init__(self, delay: float = 0.0) -> None:
        self.default_delay = delay
        self._cut: set[frozenset[str]] = set()
        self._delay: dict[frozenset[str], float] = {}

    def cut(self, a: str, b: str) -> None:
        self._cut.add(frozenset((a, b)))

    def set_delay(self, a: str, b: str, seconds: float) -> None:
        self._delay[frozenset((a, b))] = seconds

    def heal(self) -> None:
        """Every link up again, with the default delay."""
        self._cut.clear()
        self._delay.clear()

    def is_cut(self, a: str | None, b: str) -> bool:
        return a is not None and frozenset((a, b)) in self._cut

    def delay(self, a: str | None, b: str) -> float:
        if a is None:
            return self.default_delay
        return self._delay.get(frozenset((a, b)), self.default_delay)


@dataclass(eq=False)
class _Connection:
    source: str | None
    addresses: tuple[Address, Address]  # the dialer's end, the proxy's end
    writers: tuple[asyncio.StreamWriter, asyncio.StreamWriter]
    tasks: list[asyncio.Task] = field(default_factory=list)

    def drop(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class Proxy:
    """Forwards 127.0.0.1:listen_port to 127.0.0.1:target_port, the node `name`."""

    def __init__(
        self,
        listen_port: int,
        target_port: int,
        *,
        name: str = "",
        links: Links | None = None,
        identify: Identify | None = None,
    ) -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self.name = name
        self.links = links if links is not None else Links()
        self.identify = identify
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.listen_port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [task for conn in self._connections for task in conn.tasks]
        for conn in list(self._connections):
            conn.drop()
        await asyncio.gather(*tasks, return_exceptions=True)

    def enforce(self) -> None:
        """Drop the connections whose link is now cut."""
        for conn in list(self._connections):
            if conn.source is None and self.identify is not None:
                conn.source = self.identify(*conn.addresses)
            if self.links.is_cut(conn.source, self.name):
                conn.drop()
                self._connections.discard(conn)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter):
        addresses = (
            client_w.get_extra_info("peername")[:2],
            client_w.get_extra_info("sockname")[:2],
        )
        source = self.identify(*addresses) if self.identify is not None else None
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        if self.links.is_cut(source, self.name):
            client_w.transport.abort()
            server_w.transport.abort()
            return
        conn = _Connection(source, addresses, (client_w, server_w))
        self._connections.add(conn)
        for reader, writer in ((client_r, server_w), (server_r, client_w)):
            task = asyncio.ensure_future(self._pipe(conn, reader, writer))
            conn.tasks.append(task)
            task.add_done_callback(lambda _, c=conn: self._finished(c))

    def _finished(self, conn: _Connection) -> None:
        if all(task.done() for task in conn.tasks):
            self._connections.discard(conn)

    async def _pipe(
        self, conn: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        last_due = 0.0
        try:
            while True:
                data = await reader.read(65536)
                last_due = max(last_due, loop.time() + self.links.delay(conn.source, self.name))
                await queue.put((last_due, data))
                if not data:
                    break
            await sender
        except (ConnectionError, asyncio.CancelledError):
            sender.cancel()
            with contextlib.suppress(Exception):
                writer.transport.abort()


def DelayProxy(listen_port: int, target_port: int, delay: float) -> Proxy:
    """A proxy that only delays every byte by `delay` seconds each way (for bench/)."""
    return Proxy(listen_port, target_port, links=Links(delay))


class Network:
    """One proxy per node on an event loop in a thread, controlled from any thread.

    `pids` maps a node's current process id to its name; keep it up to date
    when a node restarts, so the proxies know who dials them. Each is also the
    id of the node's process group: a link its S3 workers dial is the node's.
    """

    def __init__(self, ports: dict[str, tuple[int, int]]) -> None:
        """`ports`: node name -> (proxy port, the node's real RPC port)."""
        self.links = Links()
        self.pids: dict[int, str] = {}
        self.names = list(ports)
        self.proxies = [
            Proxy(listen, target, name=name, links=self.links, identify=self._identify)
            for name, (listen, target) in ports.items()
        ]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _identify(self, peer: Address, local: Address) -> str | None:
        nodes = dict(self.pids)
        members = group_members(nodes)
        owner = connection_owner(peer, local, members)
        return None if owner is None else nodes[members[owner]]

    def _run(self, work) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=30)

    def start(self) -> None:
        self._thread.start()
        for proxy in self.proxies:
            self._run(proxy.start())

    def stop(self) -> None:
        for proxy in self.proxies:
            self._run(proxy.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def _change(self, change: Callable[[], None]) -> None:
        async def apply() -> None:
            change()
            for proxy in self.proxies:
                proxy.enforce()

        self._run(apply())

    def cut(self, pairs: Iterable[tuple[str, str]]) -> None:
        pairs = list(pairs)

        def change() -> None:
            for a, b in pairs:
                self.links.cut(a, b)

        self._change(change)

    def isolate(self, name: str) -> None:
        self.cut((name, other) for other in self.names if other != name)

    def split(self, group: Iterable[str]) -> None:
        """Cut every link between `group` and the other nodes."""
        inside = set(group)
        self.cut((a, b) for a, b in combinations(self.names, 2) if (a in inside) != (b in inside))

    def slow(self, name: str, seconds: float) -> None:
        """Delay every link of `name` by `seconds` each way."""
        others = [other for other in self.names if other != name]

        def change() -> None:
            for other in others:
                self.links.set_delay(name, other, seconds)

        self._change(change)

    def heal(self) -> None:
        self._change(self.links.heal)
