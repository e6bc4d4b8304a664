"""Bounded connections, memory and parse work per node, against real servers.

Idle sockets, silent or stalled clients and XML bombs must neither exhaust the
node's descriptors or memory nor keep it from serving a well-behaved client.
Servers that need a configured limit are started for the test; the open-file
limit of a server is lowered with prlimit(2) where a test reproduces
descriptor exhaustion.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import resource
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import GranaryServer, node_config, s3_client
from test_auth import Reply, lowered
from test_hostile import assert_s3_error, signed_request

from tests.mapped_memory import mapped_rss
from tests.ports import free_port

MiB = 1 << 20
BLOCK_SIZE = MiB  # the default block_size
READ_AHEAD_BLOCKS = 2  # granary.model.objects.READ_AHEAD_BLOCKS


def start_with(server: GranaryServer, *, s3_api: str = "", top: str = "", rpc_port: int = 0):
    """Start `server` from a config with extra `[s3_api]` and top-level lines."""
    text = node_config(server).replace('rpc_bind_addr = "127.0.0.1:0"', top)
    text = f'rpc_bind_addr = "127.0.0.1:{rpc_port}"\n' + text
    server.config_text = text.replace("[s3_api]\n", f"[s3_api]\n{s3_api}\n")
    server.start()
    return quick_client(server)


def quick_client(server: GranaryServer):
    """A client that gives up after 10 s instead of botocore's 60 s."""
    return s3_client(server.endpoint, connect_timeout=10, read_timeout=10)


def rss(server: GranaryServer) -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def settled_rss(server: GranaryServer) -> int:
    """The server's RSS once it has stopped growing for a while (at most 60 s)."""
    peak, unchanged_since = rss(server), time.monotonic()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and time.monotonic() - unchanged_since < 3:
        time.sleep(0.2)
        now = rss(server)
        if now > peak + MiB:
            peak, unchanged_since = now, time.monotonic()
    return peak


def closed_by_peer(sock: socket.socket, within: float = 20.0) -> bool:
    """Whether the other side closed `sock` (cleanly or with a reset) within `within` s,
    any bytes it sent before are read and dropped."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


@contextmanager
def sockets_to(port: int, count: int, first_bytes: bytes = b"") -> Iterator[list[socket.socket]]:
    """`count` connections to `port`, each having sent `first_bytes`; closed on exit."""
    opened = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.connect(("127.0.0.1", port))
            if first_bytes:
                sock.sendall(first_bytes)
            opened.append(sock)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def limit_open_files(server: GranaryServer, count: int) -> None:
    resource.prlimit(server.process.pid, resource.RLIMIT_NOFILE, (count, count))


def presigned_get(server: GranaryServer, bucket: str, key: str) -> bytes:
    client = s3_client(server.endpoint, signature_version="s3v4")
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=600
    )
    target = url.split(str(server.s3_port), 1)[1]
    return f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{server.s3_port}\r\n\r\n".encode()


def big_object(s3, bucket: str = "big", *, compressible: bool = True) -> str:
    """An 8 MiB object. A compressible one is stored compressed, so a GET decodes each
    block into memory; an incompressible one is stored plain and sent from its files."""
    body = base64.b64encode(os.urandom(6 * MiB)) if compressible else os.urandom(8 * MiB)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="object", Body=body)
    assert s3.get_object(Bucket=bucket, Key="object")["Body"].read() == body
    return bucket


# --- connections ----------------------------------------------------------------


def test_idle_sockets_beyond_the_limit_do_not_stop_a_client(own_server):
    s3 = start_with(own_server, s3_api="max_connections = 40")
    s3.create_bucket(Bucket="served")
    s3.put_object(Bucket="served", Key="k", Body=b"still served")
    limit_open_files(own_server, 256)  # as a 1,024 limit is to 1,100 sockets
    with sockets_to(own_server.s3_port, 300) as idle:
        fresh = quick_client(own_server)  # a new connection, behind the idle ones
        assert fresh.get_object(Bucket="served", Key="k")["Body"].read() == b"still served"
        assert closed_by_peer(idle[0])  # replaced by a newer connection


def test_a_silent_socket_is_closed_after_the_unauthenticated_timeout(own_server):
    start_with(own_server, s3_api="unauthenticated_timeout_secs = 0.5")
    with sockets_to(own_server.s3_port, 1) as (silent,):
        assert closed_by_peer(silent)


def test_an_anonymous_403_does_not_keep_its_connection(own_server):
    start_with(own_server, s3_api="unauthenticated_timeout_secs = 0.5")
    connection = http.client.HTTPConnection("127.0.0.1", own_server.s3_port, timeout=20)
    connection.request("GET", "/")
    response = connection.getresponse()
    reply = Reply(response.status, lowered(response.getheaders()), response.read())
    assert_s3_error(reply, 403, "AccessDenied")
    assert closed_by_peer(connection.sock)
    connection.close()


# --- memory -----------------------------------------------------------------------


def test_stalled_readers_keep_memory_within_the_connection_limit(own_server):
    limit = 16
    s3 = start_with(own_server, s3_api=f"max_connections = {limit}")
    bucket = big_object(s3)
    request = presigned_get(own_server, bucket, "object")
    baseline = settled_rss(own_server)
    with sockets_to(own_server.s3_port, 100, request):
        stalled = settled_rss(own_server)
    # Per connection: the block being sent, the one in the transport's buffer,
    # the blocks read ahead, and one being read; 2 blocks of slack.
    per_connection = (READ_AHEAD_BLOCKS + 5) * BLOCK_SIZE
    assert stalled - baseline <= limit * per_connection, (baseline, stalled)


@pytest.mark.parametrize(
    ("compressible", "blocks_held"),
    [(True, 2.5), (False, 0.25)],
    ids=["decoded blocks", "plain blocks"],
)
def test_a_stalled_reader_holds_about_one_block(own_server, compressible, blocks_held):
    """A GET whose client stops reading keeps the block being sent and the next one,
    not every block read ahead nor a second copy in the transport. Blocks stored
    plain are sent from their files: such a reader keeps an open file, no copy."""
    readers = 50
    s3 = start_with(own_server)
    bucket = big_object(s3, compressible=compressible)
    request = presigned_get(own_server, bucket, "object")
    baseline = settled_rss(own_server)
    with sockets_to(own_server.s3_port, readers, request):
        stalled = settled_rss(own_server)
    per_reader = (stalled - baseline) / readers
    assert per_reader <= blocks_held * BLOCK_SIZE, (baseline, stalled, per_reader)


def test_memory_is_given_back_after_a_burst(own_server):
    s3 = start_with(own_server)
    bucket = big_object(s3)
    request = presigned_get(own_server, bucket, "object")
    baseline = settled_rss(own_server)
    with sockets_to(own_server.s3_port, 150, request):
        stalled = settled_rss(own_server)
    # Each reader holds the block it is sent (the burst reuses the heap's free pages first).
    assert stalled - baseline > 100 * BLOCK_SIZE, (baseline, stalled)
    deadline = time.monotonic() + 60
    while rss(own_server) - baseline > 96 * MiB and time.monotonic() < deadline:
        time.sleep(0.5)
    assert rss(own_server) - baseline <= 96 * MiB, (baseline, stalled, rss(own_server))


def test_the_metadata_pages_read_in_a_burst_are_unmapped_once_it_is_over(own_server):
    """LMDB maps its file: each page a burst read stays in the server's RSS unless
    the idle trim unmaps it (the pages stay in the page cache)."""
    s3 = start_with(own_server)
    s3.create_bucket(Bucket="many")
    body = os.urandom(2000)  # kept inline in the object rows
    for index in range(2000):
        s3.put_object(Bucket="many", Key=f"object-{index:05d}", Body=body)
    listed = s3.get_paginator("list_objects_v2").paginate(Bucket="many")
    assert sum(page["KeyCount"] for page in listed) == 2000
    loaded = mapped_rss(own_server.process.pid, "/data.mdb")
    assert loaded > 4 * MiB
    deadline = time.monotonic() + 60
    while (
        mapped_rss(own_server.process.pid, "/data.mdb") > loaded // 4
        and time.monotonic() < deadline
    ):
        time.sleep(0.5)
    assert mapped_rss(own_server.process.pid, "/data.mdb") <= loaded // 4, loaded
    assert s3.get_object(Bucket="many", Key="object-01999")["Body"].read() == body


# --- XML bombs ----------------------------------------------------------------------


def test_an_xml_bomb_is_refused_before_its_body_ends(server, s3, bucket):
    """An 8 MiB DeleteObjects of 2 M elements gets MalformedXML after its first
    MiB; a GET sent meanwhile is answered while the bomb is still unfinished."""
    s3.put_object(Bucket=bucket, Key="keep", Body=b"kept")
    bomb = b"<Delete>" + b"<a/>" * ((8 * MiB - 17) // 4) + b"</Delete>"
    md5 = base64.b64encode(hashlib.md5(bomb).digest()).decode()
    head = signed_request(
        server,
        "POST",
        f"/{bucket}?delete",
        headers={"Content-MD5": md5, "Content-Length": str(len(bomb))},
        payload_hash="UNSIGNED-PAYLOAD",
    )
    with socket.create_connection(("127.0.0.1", server.s3_port), timeout=30) as sock:
        sock.sendall(head + bomb[:MiB])
        assert s3.get_object(Bucket=bucket, Key="keep")["Body"].read() == b"kept"
        response = http.client.HTTPResponse(sock)
        response.begin()
        reply = Reply(response.status, lowered(response.getheaders()), response.read())
    assert_s3_error(reply, 400, "MalformedXML")
    assert s3.get_object(Bucket=bucket, Key="keep")["Body"].read() == b"kept"


# --- RPC ------------------------------------------------------------------------------


def test_rpc_sockets_that_never_handshake_are_dropped(own_server):
    rpc_port = free_port()
    s3 = start_with(
        own_server,
        top="rpc_max_connections = 8\nrpc_handshake_timeout_secs = 0.5",
        rpc_port=rpc_port,
    )
    s3.create_bucket(Bucket="still-served")
    limit_open_files(own_server, 256)
    with sockets_to(rpc_port, 300) as silent:
        fresh = quick_client(own_server)  # a new connection: a descriptor is needed
        assert fresh.list_buckets()["Buckets"][0]["Name"] == "still-served"
        # Replaced at the limit, or never done with its handshake: both well
        # before the 10 s a handshake was given before.
        assert closed_by_peer(silent[0], within=5)
        assert closed_by_peer(silent[-1], within=5)
