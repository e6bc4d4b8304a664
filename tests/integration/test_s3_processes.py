"""A node serving S3 from several processes (`s3_processes`): a primary and its workers
on one listening socket, one metadata engine and one set of data folders."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    ACCESS_KEY,
    SECRET_KEY,
    GranaryServer,
    admin_call,
    block_files,
    cluster_config,
    free_port,
    node_config,
    node_pids,
    raw_request,
    start_cluster,
    start_configured,
    wait_until,
)

from granary.block.codec import block_hash
from granary.util.process_locks import SharedKeyedLocks
from tests.faults.checker import check_listings, check_reads, summary
from tests.faults.history import History, Values
from tests.faults.workload import BUCKET, KEYS, Client, Workload

MIB = 1 << 20


def workers_of(server: GranaryServer) -> set[int]:
    return set(node_pids(server)[1:])


def owner_of(sock: socket.socket, server_port: int, pids: set[int]) -> int | None:
    """Which of `pids` holds the server's end of the connection `sock` made."""
    client_port = sock.getsockname()[1]
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if (
                int(local.split(":")[1], 16) == server_port
                and int(remote.split(":")[1], 16) == client_port
            ):
                inode = fields[9]
    if inode is None:
        return None
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
        except OSError:
            continue
    return None


def connection_to(server: GranaryServer, wanted: set[int]) -> tuple[socket.socket, int]:
    """A connection (a request answered on it first) that one of `wanted` accepted."""
    everyone = wanted | {server.process.pid} | workers_of(server)  # type: ignore[union-attr]
    for _ in range(500):
        sock = socket.create_connection(("127.0.0.1", server.s3_port))
        sock.sendall(raw_request(server, "GET", "/", b"")[0])
        sock.settimeout(30)
        sock.recv(65536)
        owner = owner_of(sock, server.s3_port, everyone)
        if owner in wanted:
            return sock, owner
        sock.close()
    raise AssertionError(f"no connection accepted by {wanted}")


def test_every_process_of_a_node_serves_and_sees_the_others_writes(own_server):
    s3 = start_configured(own_server, s3_processes=3)
    wait_until(lambda: len(workers_of(own_server)) == 2, what="two S3 workers")
    s3.create_bucket(Bucket="spread")
    pids = {own_server.process.pid} | workers_of(own_server)  # type: ignore[union-attr]
    body = os.urandom(3 * MIB + 5)
    for writer in sorted(pids):
        sock, _ = connection_to(own_server, {writer})
        with sock:
            sock.sendall(raw_request(own_server, "PUT", f"/spread/by-{writer}", body)[0] + body)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    for reader in sorted(pids):
        sock, _ = connection_to(own_server, {reader})
        with sock:
            for writer in sorted(pids):
                sock.sendall(raw_request(own_server, "GET", f"/spread/by-{writer}", b"")[0])
                received = b""
                while not received.endswith(body):
                    chunk = sock.recv(1 << 20)
                    assert chunk, "connection closed before the whole object"
                    received += chunk
                assert received.startswith(b"HTTP/1.1 200")
    listed = s3.list_objects_v2(Bucket="spread")["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(f"by-{p}" for p in pids)


def test_a_killed_worker_is_replaced_and_its_unfinished_upload_released(own_server):
    s3 = start_configured(own_server, s3_processes=2, block_gc_delay_secs=0)
    wait_until(lambda: len(workers_of(own_server)) == 1, what="an S3 worker")
    s3.create_bucket(Bucket="cut")
    sock, worker = connection_to(own_server, workers_of(own_server))
    body = os.urandom(8 * MIB)
    sock.sendall(raw_request(own_server, "PUT", "/cut/big", body)[0] + body[: 5 * MIB])
    data_dir = own_server.root / "data"
    wait_until(lambda: len(block_files(data_dir)) >= 3, what="blocks of the unfinished upload")
    # What a worker killed while writing a block leaves, and another process's file.
    folder = block_files(data_dir)[0].parent
    half_written = folder / f".{'ab' * 32}.tmp-{worker}-3"
    someone_elses = folder / f".{'ab' * 32}.tmp-{own_server.process.pid}-9"  # type: ignore[union-attr]
    for path in (half_written, someone_elses):
        path.write_bytes(b"half a block")
    os.kill(worker, signal.SIGKILL)
    sock.close()
    wait_until(
        lambda: workers_of(own_server) - {worker}, what="a new worker in the killed one's place"
    )
    # The primary aborted the dead worker's upload: its blocks are collected.
    wait_until(lambda: not block_files(data_dir), what="every block to be collected")
    assert not half_written.exists() and someone_elses.exists()
    assert "Contents" not in s3.list_objects_v2(Bucket="cut")
    assert "aborted 1 upload(s) of S3 worker 1" in own_server.log()
    shown = admin_call(own_server, "GET", "/v1/workers/vars")
    assert shown["s3-processes"] == 2
    assert shown["s3-worker-restarts"] == 1
    assert shown["s3-worker-pids"] == sorted(workers_of(own_server))
    replacement, _ = connection_to(own_server, workers_of(own_server) - {worker})
    with replacement:  # the new worker serves
        replacement.sendall(raw_request(own_server, "PUT", "/cut/after", b"still serving")[0])
        replacement.sendall(b"still serving")
        assert replacement.recv(65536).startswith(b"HTTP/1.1 200")
    assert s3.get_object(Bucket="cut", Key="after")["Body"].read() == b"still serving"


def hold_in_thread(locks_file: Path, key: bytes) -> tuple[threading.Event, threading.Event]:
    """Hold `key` of the node's lock file from this (test) process until told to let go."""
    held, release = threading.Event(), threading.Event()

    async def hold() -> None:
        locks = SharedKeyedLocks(locks_file)
        async with locks.hold(key):
            held.set()
            await asyncio.get_running_loop().run_in_executor(None, release.wait)
        locks.close()

    threading.Thread(target=asyncio.run, args=(hold(),), daemon=True).start()
    assert held.wait(10)
    return held, release


@pytest.mark.parametrize("processes", [1, 2])
def test_a_block_write_waits_for_a_block_lock_held_by_another_process(own_server, processes):
    """The per-block lock (a GC deletion against a new write of the same block) is
    shared by the node's processes: here the test process plays the other one."""
    s3 = start_configured(own_server, s3_processes=processes, compression_level="none")
    s3.create_bucket(Bucket="locked")
    body = os.urandom(MIB) + os.urandom(MIB)
    _, release = hold_in_thread(
        own_server.root / "meta" / "locks" / "blocks", block_hash(body[:MIB])
    )
    done = threading.Event()

    def put() -> None:
        s3.put_object(Bucket="locked", Key="k", Body=body)
        done.set()

    writer = threading.Thread(target=put)
    writer.start()
    try:
        data_dir = own_server.root / "data"
        wait_until(lambda: len(block_files(data_dir)) >= 1, what="the unlocked block written")
        assert not done.wait(1.0), "the PUT finished while its block was locked elsewhere"
    finally:
        release.set()
    writer.join(30)
    assert done.is_set()
    assert s3.get_object(Bucket="locked", Key="k")["Body"].read() == body


def test_a_start_removes_the_block_files_a_crash_left_half_written(own_server):
    s3 = start_configured(own_server, s3_processes=2, compression_level="none")
    s3.create_bucket(Bucket="crashed")
    body = os.urandom(MIB)
    s3.put_object(Bucket="crashed", Key="k", Body=body)
    (stored,) = block_files(own_server.root / "data")
    crashed = node_pids(own_server)
    own_server.kill()
    half_written = [stored.parent / f".{stored.name}.tmp-{pid}-0" for pid in crashed]
    for path in half_written:
        path.write_bytes(b"half a block")
    own_server.start()
    wait_until(
        lambda: not any(p.exists() for p in half_written), what="the half-written files removed"
    )
    assert s3.get_object(Bucket="crashed", Key="k")["Body"].read() == body
    assert block_files(own_server.root / "data") == [stored]


def test_the_workers_stop_with_the_primary_even_when_it_is_killed(own_server):
    start_configured(own_server, s3_processes=3)
    wait_until(lambda: len(workers_of(own_server)) == 2, what="two S3 workers")
    workers = workers_of(own_server)
    assert own_server.stop(signal.SIGTERM) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    assert "Traceback" not in own_server.log()

    own_server.start()
    wait_until(lambda: len(workers_of(own_server)) == 2, what="two S3 workers again")
    workers = workers_of(own_server)
    own_server.kill()
    wait_until(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers),
        what="the orphaned workers to stop",
    )


def test_a_layout_change_reaches_the_workers_and_the_old_version_retires(own_server):
    s3 = start_configured(own_server, s3_processes=2)
    wait_until(lambda: len(workers_of(own_server)) == 1, what="an S3 worker")
    s3.create_bucket(Bucket="moving")
    node_id = own_server.cli("node", "id").stdout.strip().split("@")[0]
    own_server.cli("layout", "assign", "-z", "dc2", "-c", "2G", node_id)
    own_server.cli("layout", "apply", "--version", "2")

    def progress() -> tuple[list[int], dict]:
        shown = json.loads(own_server.cli("layout", "show", "--json").stdout)
        return shown["active_versions"], shown["done"]

    # The primary acks version 2 (and version 1 retires) only once the worker,
    # counted at version 1 from its start, has followed and reported version 2.
    wait_until(lambda: progress()[0] == [2], what="version 1 to retire")
    assert progress()[1] == {"ack": 1, "sync": 1, "sync_ack": 1}  # nodes done: the one
    for index in range(20):  # through both processes
        s3.put_object(Bucket="moving", Key=f"k{index}", Body=b"x" * 100)
    assert len(s3.list_objects_v2(Bucket="moving")["Contents"]) == 20


def test_several_processes_are_refused_without_lmdb(own_server):
    own_server.config_text = None
    for extra, message in (
        ({"s3_processes": 2, "db_engine": "sqlite"}, 'db_engine = "lmdb"'),
        ({"s3_processes": 0}, "s3_processes must be 1..64"),
    ):
        own_server.config_text = node_config(own_server, **extra)
        own_server.root.mkdir(parents=True, exist_ok=True)
        (own_server.root / "granary.toml").write_text(own_server.config_text)
        result = own_server.cli("server", check=False)
        assert result.returncode != 0
        assert message in result.stderr, result.stderr


def test_another_node_cannot_share_the_s3_port_of_a_node_with_workers(own_server, tmp_path):
    """Each process has its own socket of the port (SO_REUSEPORT, so the kernel
    spreads connections over them): a stranger must still find the port taken."""
    start_configured(own_server, s3_processes=2)
    stranger = GranaryServer(tmp_path / "stranger", s3_port=own_server.s3_port)
    stranger.config_text = node_config(stranger, s3_processes=2)
    stranger.root.mkdir(parents=True)
    (stranger.root / "granary.toml").write_text(stranger.config_text)
    result = stranger.cli("server", check=False)
    assert result.returncode != 0
    assert "cannot start" in result.stderr and "in use" in result.stderr, result.stderr


def test_the_quick_start_serves_s3_from_every_core(own_server):
    own_server.config_text = None
    own_server.start()  # the no-config command: s3 processes "auto"
    assert len(node_pids(own_server)) == min(os.cpu_count() or 1, 64)
    s3 = own_server.client()
    s3.create_bucket(Bucket="every-core")
    s3.put_object(Bucket="every-core", Key="k", Body=b"v")
    assert s3.get_object(Bucket="every-core", Key="k")["Body"].read() == b"v"
    own_server.stop()
    command = own_server.command
    own_server.command = lambda: [*command(), "--s3-processes", "1"]  # type: ignore[method-assign]
    own_server.start()
    assert len(node_pids(own_server)) == 1
    bad = own_server.cli("server", "--s3-processes", "0", check=False)
    assert bad.returncode != 0 and "--s3-processes" in bad.stderr, bad.stderr


def test_killing_s3_processes_under_load_breaks_no_acknowledged_write(own_server):
    """The fault suite's workload and checker against one node with three S3
    processes, while its workers are SIGKILLed (and once the whole node): every
    read sees the latest acknowledged write, listings hold every acknowledged
    key, whichever process served which request."""
    rng = random.Random(7)
    s3 = start_configured(own_server, s3_processes=3, block_size="16K", block_gc_delay_secs=1)
    wait_until(lambda: len(workers_of(own_server)) == 2, what="two S3 workers")
    s3.create_bucket(Bucket=BUCKET)
    history, values = History(), Values(7)
    endpoints = {"n1": own_server.endpoint}
    credentials = (ACCESS_KEY, SECRET_KEY)
    workload = Workload(
        endpoints,
        credentials,
        history,
        values,
        keys=KEYS,
        read_only_keys=[],
        threads=4,
        seed=7,
        timeout=10,
    )
    workload.start()
    kills = 0
    try:
        for step in range(10):
            time.sleep(rng.uniform(0.5, 1.5))
            if step == 5:  # the whole node: its workers stop, the next primary waits for them
                own_server.kill()
                own_server.start()
            else:
                victim = rng.choice(sorted(workers_of(own_server)))
                os.kill(victim, signal.SIGKILL)
            kills += 1
            wait_until(lambda: len(workers_of(own_server)) == 2, what="the workers back")
    finally:
        workload.stop(timeout=20)
    reader = Client(-1, endpoints, credentials, history, values, timeout=30, final=True)
    for key in KEYS:
        reader.get("n1", key)
    violations = [*check_reads(history.ops, history.final), *check_listings(history.ops, KEYS)]
    assert violations == [], violations
    counts = summary(history.ops)
    assert kills == 10
    assert counts[("put", "ok")] >= 20, counts  # the workload ran through the kills
    assert "Traceback" not in own_server.log()


def request_via(
    node: GranaryServer, pid: int, method: str, path: str, body: bytes = b""
) -> tuple[int, bytes]:
    """(status, body) of a request served by the node's process `pid`."""
    sock, _ = connection_to(node, {pid})
    with sock:
        sock.sendall(raw_request(node, method, path, body)[0] + body)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        return response.status, response.read()


def test_the_workers_of_cluster_nodes_call_peers_and_follow_a_layout_change(tmp_path):
    """Three nodes of two S3 processes each (replication factor 3): every process
    of every node writes (a quorum needs a peer, so a worker without its own links
    would answer 503) and reads every other's writes; a killed worker's
    replacement links up before it serves; a fourth node with a worker joins,
    and the workers follow the layout change to its end."""
    cluster = start_cluster(tmp_path, 3, ["dc1", "dc2", "dc3"], s3_processes=2)
    newcomer = GranaryServer(tmp_path / "node3")
    newcomer.config_text = cluster_config(
        newcomer, free_port(), [f"127.0.0.1:{cluster.rpc_ports[0]}"], s3_processes=2
    )
    cluster.nodes.append(newcomer)
    try:
        first = cluster.nodes[0]
        for node in cluster.nodes[:3]:
            wait_until(lambda n=node: len(workers_of(n)) == 1, what="an S3 worker per node")
        first.client().create_bucket(Bucket="spread")
        written: dict[str, bytes] = {}

        def write_through_every_process(nodes: list[GranaryServer], tag: str) -> None:
            for index, node in enumerate(nodes):
                for pid in node_pids(node):
                    for size in (100, 6000):  # inline, and in a block
                        key = f"{tag}-n{index}-{pid}-{size}"
                        written[key] = os.urandom(size)
                        status, _ = request_via(node, pid, "PUT", f"/spread/{key}", written[key])
                        assert status == 200, (key, status)

        def read_through_every_process(nodes: list[GranaryServer]) -> None:
            for node in nodes:
                for pid in node_pids(node):
                    for key, body in written.items():
                        assert request_via(node, pid, "GET", f"/spread/{key}") == (200, body)

        write_through_every_process(cluster.nodes[:3], "before")
        read_through_every_process(cluster.nodes[:3])

        (worker,) = workers_of(first)
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: workers_of(first) - {worker}, what="a new worker on the first node")
        (replacement,) = workers_of(first)
        key = "after-restart"
        written[key] = os.urandom(6000)
        assert request_via(first, replacement, "PUT", f"/spread/{key}", written[key])[0] == 200

        newcomer.start()
        wait_until(lambda: len(workers_of(newcomer)) == 1, what="the newcomer's worker")
        ids = cluster.node_ids()
        first.cli("layout", "assign", "-z", "dc4", "-c", "1G", ids[3])
        first.cli("layout", "apply", "--version", "2")
        write_through_every_process(cluster.nodes, "during")
        for node in cluster.nodes:
            wait_until(
                lambda n=node: (
                    json.loads(n.cli("layout", "show", "--json").stdout)["active_versions"] == [2]
                ),
                timeout=60,
                what="version 1 to retire",
            )
        read_through_every_process(cluster.nodes)
        for node in cluster.nodes:
            assert "Traceback" not in node.log()
    finally:
        cluster.stop()
