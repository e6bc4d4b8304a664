"""The link proxy: it knows who dials it, cuts and heals links, and delays them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from .cluster import free_port
from .netproxy import Network
from .sockets import connection_owner, group_members


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP echo server in a thread."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


@pytest.fixture
def network(echo_port) -> Iterator[Network]:
    """A proxy for node "b" in front of the echo server; this process is node "a"."""
    net = Network({"a": (free_port(), free_port()), "b": (free_port(), echo_port)})
    net.pids[os.getpgid(0)] = "a"  # this process's group: node a's processes
    net.start()
    yield net
    net.stop()


def dial(net: Network) -> socket.socket:
    return socket.create_connection(("127.0.0.1", net.proxies[1].listen_port), timeout=2)


def echoes(sock: socket.socket) -> bool:
    try:
        sock.sendall(b"ping")
        return sock.recv(16) == b"ping"
    except OSError:
        return False


def test_the_owner_of_a_connection_is_found_in_proc():
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        conn, peer = server.accept()
        with client, conn:
            owner = connection_owner(peer, server.getsockname(), [1, os.getpid()])
            assert owner == os.getpid()


def test_a_connection_is_known_by_the_process_group_of_its_owner():
    """A node's S3 workers dial its peers too: their links are the node's."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        dialer = (
            f"import socket, time; s = socket.create_connection(('127.0.0.1', {port})); "
            "time.sleep(60)"
        )
        # The shell leads the group and the dialer is its child, not the leader.
        leader = subprocess.Popen(
            ["sh", "-c", f'{sys.executable} -c "{dialer}"; true'], process_group=0
        )
        try:
            server.settimeout(30)
            conn, peer = server.accept()
            with conn:
                members = group_members([leader.pid])
                owner = connection_owner(peer, server.getsockname(), members)
                assert owner is not None and owner != leader.pid
                assert members[owner] == leader.pid
        finally:
            os.killpg(leader.pid, signal.SIGKILL)
            leader.wait()


def test_a_cut_drops_the_link_and_a_heal_restores_it(network):
    sock = dial(network)
    assert echoes(sock)
    assert [c.source for c in network.proxies[1]._connections] == ["a"]
    network.isolate("a")
    assert not echoes(sock)
    assert not echoes(dial(network))
    network.heal()
    assert echoes(dial(network))


def test_a_split_leaves_links_within_each_side(network):
    network.split(["a", "b"])  # everyone on one side: nothing cut
    assert echoes(dial(network))
    network.split(["a"])
    assert not echoes(dial(network))


def test_a_slow_link_delays_each_way(network):
    network.slow("a", 0.1)
    sock = dial(network)
    start = time.monotonic()
    assert echoes(sock)
    assert time.monotonic() - start >= 0.2
