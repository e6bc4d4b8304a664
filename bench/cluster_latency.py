"""Metadata latency of S3 operations in a 3-zone cluster with WAN-like links.

Starts three nodes (one per zone, replication factor 3) on 127.0.0.1; every
link between zones goes through a proxy adding DELAY each way, so the
inter-zone round trip is 2 * DELAY. A client next to node A times small
PutObject, GetObject, HeadObject, DeleteObject and ListObjectsV2 calls and
reports each median in multiples of that round trip.

    python bench/cluster_latency.py [--delay-ms 25] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from netproxy import DelayProxy

KEY_ID = "GK" + "ab" * 12
SECRET = "cd" * 32
RPC_SECRET = "ef" * 32


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ProxyThread:
    """The delaying proxies, on their own event loop in a thread."""

    def __init__(self, pairs: list[tuple[int, int]], delay: float) -> None:
        self.loop = asyncio.new_event_loop()
        self.proxies = [DelayProxy(listen, target, delay) for listen, target in pairs]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()
        for proxy in self.proxies:
            asyncio.run_coroutine_threadsafe(proxy.start(), self.loop).result()

    def stop(self) -> None:
        for proxy in self.proxies:
            asyncio.run_coroutine_threadsafe(proxy.stop(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)


class Node:
    def __init__(self, root: Path, zone: str, proxy_port: int, bootstrap: str | None) -> None:
        self.root = root
        self.zone = zone
        self.rpc_port = free_port()
        self.proxy_port = proxy_port
        self.s3_port = free_port()
        self.admin_port = free_port()
        root.mkdir(parents=True)
        peers = f'["127.0.0.1:{bootstrap}"]' if bootstrap else "[]"
        (root / "granary.toml").write_text(
            f'metadata_dir = "{root}/meta"\ndata_dir = "{root}/data"\n'
            f'replication_factor = 3\nrpc_secret = "{RPC_SECRET}"\n'
            f'rpc_bind_addr = "127.0.0.1:{self.rpc_port}"\n'
            f'rpc_public_addr = "127.0.0.1:{proxy_port}"\nbootstrap_peers = {peers}\n'
            "ping_interval_secs = 1.0\n"
            f'[s3_api]\napi_bind_addr = "127.0.0.1:{self.s3_port}"\n'
            f'[admin]\napi_bind_addr = "127.0.0.1:{self.admin_port}"\n'
        )
        self.process: subprocess.Popen | None = None

    def cli(self, *args: str) -> str:
        command = [sys.executable, "-m", "granary.cli", "-c", str(self.root / "granary.toml")]
        return subprocess.run(
            [*command, *args], capture_output=True, text=True, check=True, timeout=60
        ).stdout

    def start(self) -> None:
        env = dict(os.environ, GRANARY_ACCESS_KEY_ID=KEY_ID, GRANARY_SECRET_ACCESS_KEY=SECRET)
        log = open(self.root / "server.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "granary.cli", "-c", str(self.root / "granary.toml"), "server"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.s3_port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"node in {self.root} did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)


def timed(call, rounds: int) -> list[float]:
    samples = []
    for index in range(rounds):
        start = time.perf_counter()
        call(index)
        samples.append(time.perf_counter() - start)
    return samples


def measure(client, rounds: int) -> dict[str, list[float]]:
    bucket = "latency"
    client.create_bucket(Bucket=bucket)
    for index in range(rounds):
        client.put_object(Bucket=bucket, Key=f"list/{index}", Body=b"x")
    body = b"small object" * 10
    return {
        "PutObject": timed(
            lambda i: client.put_object(Bucket=bucket, Key=f"k{i}", Body=body), rounds
        ),
        "GetObject": timed(
            lambda i: client.get_object(Bucket=bucket, Key=f"k{i}")["Body"].read(), rounds
        ),
        "HeadObject": timed(lambda i: client.head_object(Bucket=bucket, Key=f"k{i}"), rounds),
        "ListObjectsV2": timed(
            lambda i: client.list_objects_v2(Bucket=bucket, Prefix="list/", MaxKeys=100), rounds
        ),
        "DeleteObject": timed(lambda i: client.delete_object(Bucket=bucket, Key=f"k{i}"), rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=25.0, help="one-way delay")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    delay = args.delay_ms / 1000
    rtt = 2 * delay
    with tempfile.TemporaryDirectory() as scratch:
        proxy_ports = [free_port() for _ in range(3)]
        nodes = [
            Node(
                Path(scratch) / f"n{i}", f"dc{i + 1}", proxy_ports[i], proxy_ports[0] if i else None
            )
            for i in range(3)
        ]
        proxies = ProxyThread([(n.proxy_port, n.rpc_port) for n in nodes], delay)
        proxies.start()
        try:
            for node in nodes:
                node.start()
            ids = [node.cli("node", "id").strip().split("@")[0] for node in nodes]
            for node_id, node in zip(ids, nodes, strict=True):
                nodes[0].cli("layout", "assign", "-z", node.zone, "-c", "1G", node_id)
            nodes[0].cli("layout", "apply", "--version", "1")
            time.sleep(3)
            client = boto3.client(
                "s3",
                endpoint_url=f"http://127.0.0.1:{nodes[0].s3_port}",
                aws_access_key_id=KEY_ID,
                aws_secret_access_key=SECRET,
                region_name="us-east-1",
                config=BotoConfig(retries={"max_attempts": 1}),
            )
            client.list_buckets()
            results = measure(client, args.rounds)
        finally:
            for node in nodes:
                node.stop()
            proxies.stop()
    print(f"inter-zone RTT {rtt * 1000:.0f} ms, {args.rounds} calls each, client next to node A")
    print(f"{'operation':<15} {'p50 ms':>8} {'p90 ms':>8} {'p50 / RTT':>10}")
    report = {}
    for name, samples in results.items():
        p50 = statistics.median(samples)
        p90 = sorted(samples)[int(0.9 * (len(samples) - 1))]
        report[name] = {"p50_ms": p50 * 1000, "p90_ms": p90 * 1000, "rtt_multiple": p50 / rtt}
        print(f"{name:<15} {p50 * 1000:>8.1f} {p90 * 1000:>8.1f} {p50 / rtt:>10.2f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
