"""NetApp: this node's RPC endpoint. It listens, dials, and routes each call to
the connection of the node it names, or straight to the handler for itself.

A node's S3 worker processes run a NetApp that `serves` nothing: it never
listens, and its links tell the peer (in their Hello) to answer its calls
without ever routing a call of its own to them; such links are kept apart as
*callers*, counted against the connection limit and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from granary.net import metrics
from granary.net.addresses import format_addr, parse_addr
from granary.net.connection import Connection, Reply
from granary.net.errors import (
    HANDLER_ERROR,
    NO_SUCH_ENDPOINT,
    CallTimeout,
    HandshakeError,
    PeerUnavailable,
    RpcError,
)
from granary.net.handshake import exchange_hello
from granary.net.identity import node_id as node_id_of
from granary.net.messages import MAX_BODY_SIZE, NORMAL, PRIORITIES, PROTOCOL_VERSION, Hello
from granary.net.tls import cluster_tls
from granary.telemetry import tracing

log = logging.getLogger("granary.net")

DEFAULT_TIMEOUT = 300.0
HANDSHAKE_TIMEOUT = 10.0
MAX_CONNECTIONS = 512
BACKLOG = 128
READ_BUFFER = 256 * 1024
# Half-open links (a peer machine gone without a FIN) die within about two minutes.
KEEPALIVE = {"TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 15, "TCP_KEEPCNT": 4}

# handler(from_node, body, stream) -> (reply body, optional reply stream)
Handler = Callable[[bytes, bytes, AsyncIterator[bytes] | None], Awaitable[Reply]]
PeerUp = Callable[[bytes, str], None]
PeerDown = Callable[[bytes], None]


class NetApp:
    """Authenticated RPC to the other nodes of the cluster (and to ourselves)."""

    def __init__(
        self,
        node_key: Ed25519PrivateKey,
        rpc_secret: bytes,
        *,
        bind: tuple[str, int],
        public_addr: str | None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        serves: bool = True,
    ) -> None:
        self.node_id = node_id_of(node_key)
        self._short_id = self.node_id.hex()[:16]  # as metrics label nodes
        self.serves = serves
        self.public_addr = public_addr
        self._bind = bind
        self._handshake_timeout = handshake_timeout
        self._max_connections = max_connections
        # Incoming connections still in TLS or the Hello swap, oldest first.
        self._handshaking: dict[asyncio.Task[None], None] = {}
        self._tls = cluster_tls(node_key, rpc_secret)
        self._handlers: dict[str, Handler] = {}
        # Open connections per peer, oldest first; calls use the newest.
        self._conns: dict[bytes, list[Connection]] = {}
        # Links of the peers' S3 workers: they call us; we never call over them.
        self._callers: dict[bytes, list[Connection]] = {}
        self._up_listeners: list[PeerUp] = []
        self._down_listeners: list[PeerDown] = []
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def port(self) -> int:
        """The RPC port, the one actually bound once started (bind port 0 picks one)."""
        if self._listener is not None:
            return self._listener.getsockname()[1]
        return self._bind[1]

    def endpoint(self, name: str, handler: Handler) -> None:
        """Serve calls to `name` with `handler` (replacing any previous one)."""
        self._handlers[name] = handler

    def add_listener(self, on_up: PeerUp, on_down: PeerDown) -> None:
        """Be told when a peer gets its first connection (with the address to reach
        it again: the one dialed, or the one it announced) and when it loses its last."""
        self._up_listeners.append(on_up)
        self._down_listeners.append(on_down)

    async def start(self) -> None:
        if not self.serves:
            raise RuntimeError("a NetApp that serves no calls does not listen")
        host, port = self._bind
        # Sockets are accepted here and TLS started on them in `_handshake`, so that
        # handshakes in progress are counted, bounded in time and replaced.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.create_server((host, port), family=family, backlog=BACKLOG)
        listener.setblocking(False)
        self._listener = listener
        self._accepting = asyncio.ensure_future(self._accept_loop(listener))
        log.info("RPC listening on %s as node %s", format_addr(host, self.port), self.node_id.hex())

    async def stop(self) -> None:
        self._stopped = True
        if self._accepting is not None:
            self._accepting.cancel()
        for handshake in list(self._handshaking):
            handshake.cancel()
        conns = [
            conn for links in (self._conns, self._callers) for c in links.values() for conn in c
        ]
        await asyncio.gather(*(conn.aclose() for conn in conns))
        if self._listener is not None:
            self._listener.close()

    async def connect(self, node_id: bytes | None, host: str, port: int) -> bytes:
        """Dial a peer and return its node id; refuse it if it is not `node_id`."""
        if self._stopped:
            raise PeerUnavailable("this node is stopping")
        if node_id is not None and self.is_connected(node_id):
            return node_id
        where = format_addr(host, port)
        try:
            async with asyncio.timeout(self._handshake_timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=self._tls.client, limit=READ_BUFFER
                )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            raise PeerUnavailable(f"cannot connect to {where}: {exc!r}") from None
        try:
            peer, _ = await exchange_hello(
                reader, writer, self._tls, self._hello(), self._handshake_timeout, node_id
            )
        except BaseException as exc:
            writer.close()
            if isinstance(exc, HandshakeError):
                raise PeerUnavailable(str(exc)) from None
            raise
        self._register(reader, writer, peer, where, dialer=self.node_id, routed=True)
        return peer

    async def disconnect(self, node: bytes) -> None:
        """Close every connection to `node` (its calls fail with PeerUnavailable)."""
        await asyncio.gather(*(conn.aclose() for conn in list(self._conns.get(node, ()))))

    async def call(
        self,
        node: bytes,
        endpoint: str,
        body: bytes,
        *,
        priority: int = NORMAL,
        stream: AsyncIterator[bytes] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """Call `endpoint` on `node`; raise RpcError (PeerUnavailable if no answer).

        `stream` is consumed (and closed) by the call; bodies over MAX_BODY_SIZE
        must be streamed.
        """
        if priority not in PRIORITIES:
            raise ValueError(f"unknown priority {priority!r}")
        _check_body(body)
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        if node == self.node_id:
            return await self._call_local(endpoint, bytes(body), stream, timeout)
        if endpoint.startswith(metrics.UNCOUNTED_PREFIX):
            return await self._call_remote(node, endpoint, body, priority, stream, timeout)
        target = node.hex()[:16]
        with (
            metrics.counted(endpoint, self._short_id, target),
            tracing.span(endpoint, tracing.CLIENT) as span,
        ):
            if not span.recording:
                return await self._call_remote(node, endpoint, body, priority, stream, timeout)
            span.set("rpc.system", "granary")
            span.set("granary.peer", target)
            return await self._call_remote(
                node, endpoint, body, priority, stream, timeout, span.traceparent()
            )

    async def _call_remote(
        self,
        node: bytes,
        endpoint: str,
        body: bytes,
        priority: int,
        stream: AsyncIterator[bytes] | None,
        timeout: float,
        trace: str = "",
    ) -> Reply:
        conns = self._conns.get(node)
        if not conns:
            raise PeerUnavailable(f"not connected to node {node.hex()[:16]}")
        return await conns[-1].call(endpoint, body, priority, stream, timeout, trace)

    def is_connected(self, node: bytes) -> bool:
        return node == self.node_id or bool(self._conns.get(node))

    def connected_peers(self) -> list[bytes]:
        return list(self._conns)

    # -- internals

    def connected_callers(self) -> list[bytes]:
        """Peers whose S3 workers have links to us (calls to us only)."""
        return list(self._callers)

    def _hello(self) -> Hello:
        return Hello(PROTOCOL_VERSION, self.node_id, self.public_addr, self.port, self.serves)

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:  # e.g. out of file descriptors: wait, do not spin
                log.warning("accepting an RPC connection failed: %s", exc)
                await asyncio.sleep(1)
                continue
            if not self._make_room():
                log.warning("refused an incoming RPC connection: %d open", self._max_connections)
                sock.close()
                continue
            handshake = asyncio.ensure_future(self._handshake(sock))
            self._handshaking[handshake] = None
            handshake.add_done_callback(self._handshake_done)
            # An accept that is ready does not yield: let the handshake start (it then
            # owns the socket, closed if it is cancelled) and the other tasks run.
            await asyncio.sleep(0)

    def _make_room(self) -> bool:
        """Whether one more incoming connection fits, once the oldest one still in its
        handshake is dropped if needed; False if every connection is established."""
        established = sum(len(c) for links in (self._conns, self._callers) for c in links.values())
        if established + len(self._handshaking) < self._max_connections:
            return True
        if not self._handshaking:
            return False
        oldest = next(iter(self._handshaking))
        del self._handshaking[oldest]
        oldest.cancel()
        return True

    def _handshake_done(self, handshake: asyncio.Task[None]) -> None:
        self._handshaking.pop(handshake, None)
        if not handshake.cancelled() and handshake.exception() is not None:
            log.error("an incoming RPC connection failed", exc_info=handshake.exception())

    async def _handshake(self, sock: socket.socket) -> None:
        """TLS, then the Hello swap, within the handshake timeout; then serve the peer."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_BUFFER)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            async with asyncio.timeout(self._handshake_timeout):
                # uvloop returns its TLS protocol here, not ours.
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol, sock, ssl=self._tls.server
                )
                writer = asyncio.StreamWriter(transport, protocol, reader, loop)
                try:
                    peer, hello = await exchange_hello(
                        reader, writer, self._tls, self._hello(), self._handshake_timeout
                    )
                except BaseException:
                    transport.abort()
                    raise
        except (HandshakeError, TimeoutError, OSError) as exc:
            log.warning("refused an incoming RPC connection: %s", str(exc) or repr(exc))
            sock.close()
            return
        addr = format_addr(writer.get_extra_info("peername")[0], hello.port)
        if hello.public_addr is not None:
            try:
                parse_addr(hello.public_addr)
                addr = hello.public_addr
            except ValueError:
                log.warning(
                    "node %s announced a bad address %r", peer.hex()[:16], hello.public_addr
                )
        self._register(reader, writer, peer, addr, dialer=peer, routed=hello.serves)

    def _register(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: bytes,
        addr: str,
        *,
        dialer: bytes,
        routed: bool,
    ) -> None:
        """Keep a new link: `routed` ones carry our calls to `peer` and make it up."""
        links = self._conns if routed else self._callers
        conns = links.get(peer, [])
        dialed_twice = dialer == self.node_id and any(c.dialer_id == dialer for c in conns)
        if self._stopped or peer == self.node_id or dialed_twice:
            writer.close()
            return
        _keep_alive(writer)
        conn = Connection(
            reader,
            writer,
            peer_id=peer,
            dialer_id=dialer,
            dispatch=self._dispatch,
            on_closed=self._on_closed,
        )
        links[peer] = [*conns, conn]
        conn.start()
        if routed and not conns:
            log.info("connected to node %s at %s", peer.hex()[:16], addr)
            for on_up in self._up_listeners:
                on_up(peer, addr)

    def _on_closed(self, conn: Connection) -> None:
        peer = conn.peer_id
        links = self._callers if conn in self._callers.get(peer, ()) else self._conns
        conns = [c for c in links.get(peer, ()) if c is not conn]
        if conns:
            links[peer] = conns
            return
        if links.pop(peer, None) is not None and links is self._conns:
            log.info("disconnected from node %s", peer.hex()[:16])
            for on_down in self._down_listeners:
                on_down(peer)

    async def _dispatch(
        self, peer: bytes, endpoint: str, body: bytes, stream: AsyncIterator[bytes] | None
    ) -> Reply:
        handler = self._handlers.get(endpoint)
        if handler is None:
            raise RpcError(NO_SUCH_ENDPOINT, f"no endpoint {endpoint!r} on this node")
        reply, reply_stream = await handler(peer, body, stream)
        _check_body(reply)
        return reply, reply_stream

    async def _call_local(
        self, endpoint: str, body: bytes, stream: AsyncIterator[bytes] | None, timeout: float
    ) -> Reply:
        """A call to ourselves: the handler runs in the caller's task, errors as remote."""
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                return await self._dispatch(self.node_id, endpoint, body, stream)
        except RpcError:
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError) and scope.expired():
                raise CallTimeout(f"{endpoint} on this node: no answer within {timeout}s") from None
            log.warning("handler for %s failed on a local call", endpoint, exc_info=True)
            raise RpcError(HANDLER_ERROR, f"{type(exc).__name__}: {exc}") from exc


def _check_body(body: object) -> None:
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError(f"an RPC body is bytes, not {type(body).__name__}")
    if len(body) > MAX_BODY_SIZE:
        raise ValueError(f"an RPC body of {len(body)} bytes is over {MAX_BODY_SIZE}: stream it")


def _keep_alive(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in KEEPALIVE.items():
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
