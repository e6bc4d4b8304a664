"""Cluster throughput and GET tail latency with a paused node, on one machine.

throughput: PUT then GET 64 MiB objects at concurrency 8, first against one
standalone node, then against 3 nodes (3 zones, replication factor 3) with the
workers spread over the 3 endpoints; prints MB/s and the cluster/1-node ratio.
Every byte a cluster PUT receives is stored three times on this one machine,
so the ratio measures how much of the single node's speed the replication
costs here, not what separate machines would reach.

paused: 3 storage nodes and a gateway (which stores nothing, so it reads both
metadata and blocks from the storage nodes). 1 MiB GETs through the gateway
at concurrency 4: once with every node running, then with the storage node
the gateway asks first paused (SIGSTOP), with hedging on and with it off.
Prints p50/p99/max per phase.

    python bench/cluster_bench.py [throughput|paused|all] [--seconds 10] [--out r.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import uvloop
from cluster import Cluster, ClusterNode
from loadgen import S3Client, Signer, keep_freed_memory
from phases import PhaseResult, PhaseRunner
from report import publish
from server_process import ServerProcess, new_credentials

from granary.block.codec import block_hash

MIB = 1 << 20
BIG = 64 * MIB
SMALL = 1 * MIB
BIG_CONCURRENCY = 8
PAUSED_CONCURRENCY = 4
PAUSED_OBJECTS = 40


def clients_for(endpoints: list[str], credentials: tuple[str, str], per: int) -> list[S3Client]:
    signer = Signer(*credentials)
    return [S3Client(endpoint, signer, "bench", per) for endpoint in endpoints]


async def put_get(
    runner: PhaseRunner, clients: list[S3Client], seconds: float, label: str
) -> list[dict]:
    """PUT 64 MiB objects for `seconds`, then GET them back; worker i uses client i mod n."""
    await clients[0].create_bucket()
    keys: list[str] = []

    async def put(worker: int, iteration: int) -> int:
        key = f"big/{worker}/{iteration}"
        moved = await clients[worker % len(clients)].put(key, BIG)
        keys.append(key)
        return moved

    async def get(worker: int, iteration: int) -> int:
        key = keys[(worker + iteration * BIG_CONCURRENCY) % len(keys)]
        received = await clients[worker % len(clients)].get(key)
        if received != BIG:
            raise RuntimeError(f"GET {key}: {received} bytes instead of {BIG}")
        return received

    results = [
        await runner.run(f"{label} PUT", BIG, BIG_CONCURRENCY, seconds, put),
        await runner.run(f"{label} GET", BIG, BIG_CONCURRENCY, seconds, get),
    ]
    return [row(result) for result in results]


def row(result: PhaseResult) -> dict:
    return {
        "phase": result.name,
        "mb_per_s": result.mb_per_s,
        "ops": result.ops,
        "p50_ms": result.latency_ms(0.5),
        "p99_ms": result.latency_ms(0.99),
        "max_ms": max(result.latencies) * 1000,
        "server_cpu_s_per_gib": result.server_cpu_per_gib,
    }


async def run_with_clients(
    endpoints: list[str],
    credentials: tuple[str, str],
    per: int,
    body: Callable[[list[S3Client]], Awaitable[list[dict]]],
) -> list[dict]:
    """Run `body` with one client per endpoint (`per` connections each), then close them."""
    clients = clients_for(endpoints, credentials, per)
    try:
        return await body(clients)
    finally:
        for client in clients:
            await client.close()


def throughput(root: Path, seconds: float) -> list[dict]:
    credentials = new_credentials()
    (root / "single").mkdir(parents=True)
    single = ServerProcess(root / "single", credentials, None)
    try:
        single.start()
        one = uvloop.run(
            run_with_clients(
                [single.endpoint],
                credentials,
                BIG_CONCURRENCY,
                lambda clients: put_get(PhaseRunner(single), clients, seconds, "1 node"),
            )
        )
    finally:
        single.stop()
    shutil.rmtree(root / "single", ignore_errors=True)
    cluster = Cluster(root / "cluster", credentials, 3)
    try:
        cluster.start()
        three = uvloop.run(
            run_with_clients(
                [node.endpoint for node in cluster.nodes],
                credentials,
                BIG_CONCURRENCY,
                lambda clients: put_get(PhaseRunner(cluster), clients, seconds, "3 nodes RF=3"),
            )
        )
    finally:
        cluster.stop()
    for one_row, three_row in zip(one, three, strict=True):
        three_row["ratio_to_single"] = three_row["mb_per_s"] / one_row["mb_per_s"]
    return one + three


async def fill_small(client: S3Client) -> bytes:
    """PAUSED_OBJECTS objects of one block each; returns the last one's block id."""
    await client.create_bucket()
    for index in range(PAUSED_OBJECTS):
        start = client.source.take(SMALL)
        await client.put_at(f"small/{index}", start, SMALL)
    return block_hash(b"".join(client.source.slices(start, SMALL)))


async def gets(runner: PhaseRunner, client: S3Client, name: str, seconds: float) -> dict:
    async def get(worker: int, iteration: int) -> int:
        key = f"small/{(worker + iteration * PAUSED_CONCURRENCY) % PAUSED_OBJECTS}"
        received = await client.get(key)
        if received != SMALL:
            raise RuntimeError(f"GET {key}: {received} bytes instead of {SMALL}")
        return received

    result = await runner.run(name, SMALL, PAUSED_CONCURRENCY, seconds, get)
    return row(result)


def set_hedging(gateway: ClusterNode, on: bool) -> None:
    for reads in ("block", "table"):
        gateway.cli("worker", "set", f"{reads}-read-hedging", str(on).lower())


def nearest_holder(cluster: Cluster, gateway: ClusterNode, block: bytes) -> ClusterNode:
    """The storage node the gateway would read `block` from first."""
    first = json.loads(gateway.cli("block", "info", block.hex(), "--json"))["read_order"][0]
    return next(node for node in cluster.nodes if node.node_id() == first)


def paused(root: Path, seconds: float) -> list[dict]:
    credentials = new_credentials()
    cluster = Cluster(root / "paused", credentials, 3, gateways=1)
    gateway = cluster.nodes[3]
    try:
        cluster.start()

        async def body(clients: list[S3Client]) -> list[dict]:
            [client] = clients
            runner = PhaseRunner(cluster)
            block = await fill_small(client)
            phases = [await gets(runner, client, "GET, all running", seconds)]
            for label, on in (("hedging on", True), ("hedging off", False)):
                set_hedging(gateway, on)
                # Asked now: a node paused before looks far away for a while.
                victim = nearest_holder(cluster, gateway, block)
                os.kill(victim.pid, signal.SIGSTOP)
                try:
                    phases.append(await gets(runner, client, f"GET, 1 paused, {label}", seconds))
                finally:
                    os.kill(victim.pid, signal.SIGCONT)
                await asyncio.to_thread(cluster.wait_ready, 120.0)
            return phases

        return uvloop.run(
            run_with_clients([gateway.endpoint], credentials, PAUSED_CONCURRENCY, body)
        )
    finally:
        cluster.stop()


def render(results: dict[str, list[dict]]) -> str:
    lines = []
    for section, rows in results.items():
        lines.append(f"== {section}")
        lines.append(
            f"{'phase':<26} {'MB/s':>8} {'ops':>6} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}"
            f" {'CPU-s/GiB':>9} {'ratio':>6}"
        )
        for item in rows:
            ratio = item.get("ratio_to_single")
            lines.append(
                f"{item['phase']:<26} {item['mb_per_s']:>8.1f} {item['ops']:>6}"
                f" {item['p50_ms']:>9.1f} {item['p99_ms']:>9.1f} {item['max_ms']:>9.1f}"
                f" {item['server_cpu_s_per_gib']:>9.2f}"
                f" {'' if ratio is None else format(ratio, '.2f'):>6}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all", choices=["throughput", "paused", "all"])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    keep_freed_memory()
    root = Path(tempfile.mkdtemp(prefix="granary-cluster-bench-"))
    results = {}
    try:
        if args.what in ("throughput", "all"):
            results["throughput (64 MiB, concurrency 8)"] = throughput(root, args.seconds)
        if args.what in ("paused", "all"):
            results["paused (1 MiB GETs via a gateway, concurrency 4)"] = paused(root, args.seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    publish(render(results), results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
