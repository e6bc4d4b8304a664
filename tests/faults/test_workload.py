"""How the workload records a write that is cut off: it may have happened."""

from __future__ import annotations

import socket
import threading

from .history import History, Kind, Outcome, Values
from .workload import Client


def _closing_server() -> tuple[socket.socket, int]:
    """A server that reads each request's first bytes, then closes without answering:
    what a client sees from a node killed while it handled the request."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            with connection:
                connection.recv(65536)

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def test_a_write_cut_off_is_unknown_and_a_read_failed():
    server, port = _closing_server()
    with server:
        client = Client(
            0,
            {"n1": f"http://127.0.0.1:{port}"},
            ("key", "secret"),
            History(),
            Values(1),
            timeout=5,
        )
        outcomes = {
            Kind.CREATE: client.create("n1", "k").outcome,
            Kind.SWAP: client.swap("n1", "k", "v000001-p0-00000000").outcome,
            Kind.PUT: client.put("n1", "k").outcome,
            Kind.GET: client.get("n1", "k").outcome,
        }
    assert outcomes == {
        Kind.CREATE: Outcome.UNKNOWN,
        Kind.SWAP: Outcome.UNKNOWN,
        Kind.PUT: Outcome.UNKNOWN,
        Kind.GET: Outcome.FAIL,
    }
