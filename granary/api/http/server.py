"""The listening side: accepts connections, sweeps their timeouts, shuts them down."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl as ssl_module

from granary.api.http.protocol import ConnectionSettings, HttpConnection
from granary.api.http.types import (
    ErrorRenderer,
    Handler,
    HandlerExceptionHook,
    HttpLimits,
)

_BACKLOG = 1024


class HttpServer:
    """A small HTTP/1.1 server that hands every request to one async handler."""

    def __init__(
        self,
        handler: Handler,
        *,
        limits: HttpLimits | None = None,
        render_error: ErrorRenderer | None = None,
        on_handler_exception: HandlerExceptionHook | None = None,
    ) -> None:
        self._settings = ConnectionSettings(
            handler, limits or HttpLimits(), render_error, on_handler_exception
        )
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        limits = self._settings.limits
        shortest = min(
            limits.header_timeout,
            limits.keepalive_timeout,
            limits.body_timeout,
            limits.write_timeout,
            limits.linger_timeout,
        )
        # Timeouts fire within one sweep interval of their deadline.
        self._sweep_interval = min(1.0, max(0.01, shortest / 8))

    async def start(
        self,
        host: str,
        port: int,
        *,
        sock: socket.socket | None = None,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        """Listen on host:port, or on `sock` when given."""
        loop = asyncio.get_running_loop()
        settings = self._settings
        settings.closing = False
        if sock is not None:
            server = await loop.create_server(
                lambda: HttpConnection(settings), sock=sock, ssl=ssl, backlog=_BACKLOG
            )
        else:
            server = await loop.create_server(
                lambda: HttpConnection(settings),
                host,
                port,
                ssl=ssl,
                backlog=_BACKLOG,
                reuse_address=True,
            )
        self._server = server
        self._sweeper = loop.call_later(self._sweep_interval, self._sweep)

    @property
    def serving(self) -> bool:
        """Started and not closed."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port (useful after listening on port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the server is not listening")
        return self._server.sockets[0].getsockname()[1]

    @property
    def connection_count(self) -> int:
        return len(self._settings.connections)

    @property
    def requests_started(self) -> int:
        """Requests whose head was received since the server was created."""
        return self._settings.requests_started

    @property
    def requests_in_progress(self) -> int:
        """Connections whose request is being answered (or its body drained)."""
        return sum(
            1
            for connection in self._settings.connections
            if connection.task is not None and not connection.task.done()
        )

    async def close(self, grace_period: float = 10.0) -> None:
        """Stop accepting, close idle connections, and give requests in progress
        `grace_period` seconds to finish before cutting them off."""
        server = self._server
        if server is None:
            return
        self._server = None
        settings = self._settings
        settings.closing = True
        server.close()
        connections = settings.connections
        if connections:
            settings.all_closed = asyncio.Event()
            for connection in list(connections):
                connection.shutdown()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settings.all_closed.wait(), grace_period)
            settings.all_closed = None
        tasks = []
        for connection in list(connections):
            connection.abort()
            if connection.task is not None:
                tasks.append(connection.task)
        if tasks:
            await asyncio.wait(tasks, timeout=grace_period)
        await server.wait_closed()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for connection in list(self._settings.connections):
            connection.check_timeout(now)
        self._sweeper = loop.call_later(self._sweep_interval, self._sweep)
