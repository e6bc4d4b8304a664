"""Metadata latency of S3 operations in a 3-zone cluster with WAN-like links.

Starts three nodes (one per zone, replication factor 3) on 127.0.0.1; every
link between zones goes through a proxy adding DELAY each way, so the
inter-zone round trip is 2 * DELAY. A client next to node A times small
PutObject (plain, then conditional: a create with If-None-Match and a
compare-and-set with If-Match, each one round among the replicas),
GetObject, HeadObject, DeleteObject and ListObjectsV2 calls, then the small
calls of a bucket with versioning and object lock (a versioned PUT, a legal
hold, a deletion by version id, a version listing), and reports each median
in multiples of that round trip.

    python bench/cluster_latency.py [--delay-ms 25] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import Cluster
from netproxy import DelayProxy
from server_process import free_port, new_credentials


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
    etag = hashlib.md5(body).hexdigest()  # If-Match names the ETag the creates left
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
        "PutObject If-None-Match": timed(
            lambda i: client.put_object(Bucket=bucket, Key=f"c{i}", Body=body, IfNoneMatch="*"),
            rounds,
        ),
        "PutObject If-Match": timed(
            lambda i: client.put_object(Bucket=bucket, Key=f"c{i}", Body=body, IfMatch=etag),
            rounds,
        ),
        "DeleteObject": timed(lambda i: client.delete_object(Bucket=bucket, Key=f"k{i}"), rounds),
        **measure_versions(client, rounds, body),
    }


def measure_versions(client, rounds: int, body: bytes) -> dict[str, list[float]]:
    """The same small calls in a bucket with versioning and object lock: a versioned
    PUT (the row read, then the version written), a legal hold set and a version
    deleted by id (each one round among the replicas), a version listing."""
    bucket = "locked"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    ids: list[str] = []

    def put(index: int) -> None:
        ids.append(client.put_object(Bucket=bucket, Key=f"v{index}", Body=body)["VersionId"])

    return {
        "PutObject, versioned": timed(put, rounds),
        "PutObjectLegalHold": timed(
            lambda i: client.put_object_legal_hold(
                Bucket=bucket, Key=f"v{i}", VersionId=ids[i], LegalHold={"Status": "OFF"}
            ),
            rounds,
        ),
        "DeleteObject versionId": timed(
            lambda i: client.delete_object(Bucket=bucket, Key=f"v{i}", VersionId=ids[i]), rounds
        ),
        "ListObjectVersions": timed(
            lambda i: client.list_object_versions(Bucket=bucket, MaxKeys=100), rounds
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=25.0, help="one-way delay")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    delay = args.delay_ms / 1000
    rtt = 2 * delay
    credentials = new_credentials()
    with tempfile.TemporaryDirectory() as scratch:
        proxy_ports = [free_port() for _ in range(3)]
        cluster = Cluster(
            Path(scratch),
            credentials,
            3,
            public_ports=proxy_ports,
            settings={"ping_interval_secs": 1.0},
        )
        proxies = ProxyThread(
            [(port, node.rpc_port) for port, node in zip(proxy_ports, cluster.nodes, strict=True)],
            delay,
        )
        proxies.start()
        try:
            cluster.start()
            time.sleep(3)  # a few pings: the nodes know their round trips
            client = boto3.client(
                "s3",
                endpoint_url=cluster.nodes[0].endpoint,
                aws_access_key_id=credentials[0],
                aws_secret_access_key=credentials[1],
                region_name="us-east-1",
                config=BotoConfig(retries={"max_attempts": 1}),
            )
            client.list_buckets()
            results = measure(client, args.rounds)
        finally:
            cluster.stop()
            proxies.stop()
    print(f"inter-zone RTT {rtt * 1000:.0f} ms, {args.rounds} calls each, client next to node A")
    print(f"{'operation':<26} {'p50 ms':>8} {'p90 ms':>8} {'p50 / RTT':>10}")
    report = {}
    for name, samples in results.items():
        p50 = statistics.median(samples)
        p90 = sorted(samples)[int(0.9 * (len(samples) - 1))]
        report[name] = {"p50_ms": p50 * 1000, "p90_ms": p90 * 1000, "rtt_multiple": p50 / rtt}
        print(f"{name:<26} {p50 * 1000:>8.1f} {p90 * 1000:>8.1f} {p50 / rtt:>10.2f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
