"""Granary S3 benchmark: throughput and small-object ops/s next to this machine's limits.

    python bench/s3_bench.py [--quick] [--out results.json] [--profile DIR]

Starts its own `granary server` (temp folder, free ports on 127.0.0.1) and
stops it at the end. See bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import machine
import uvloop
from loadgen import S3Client, S3Failure, Signer, keep_freed_memory
from phases import PhaseResult, PhaseRunner
from report import publish, render, size_label, targets
from server_process import ServerProcess, new_credentials

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
CONCURRENCIES = (1, 16)
SMALL = 4 * KIB
LIST_PREFIX = "list/"
LIST_KEYS = 1000
LIST_PAGE = 100
BUCKET = "bench"


@dataclasses.dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    seconds: float  # per throughput phase; every worker moves at least one object
    small_seconds: float  # per small-object phase
    loopback_bytes: int
    disk_bytes: int


FULL = Plan((MIB, 64 * MIB, GIB), 6.0, 3.0, GIB, 512 * MIB)
QUICK = Plan((MIB, 64 * MIB), 2.0, 1.5, 256 * MIB, 256 * MIB)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, shorter phases")
    parser.add_argument("--out", type=Path, help="also save the results as JSON here")
    parser.add_argument("--dir", type=Path, help="parent of the temp folder (default: $TMPDIR)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client")
    parser.add_argument(
        "--profile", type=Path, help="py-spy every phase into DIR (slows the server)"
    )
    return parser.parse_args(argv)


def split_cpus(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """Server on the first allowed core, the load generator on the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


async def verify(client: S3Client, size: int) -> None:
    """PUT one object, check its ETag is its MD5, GET it back and check length and MD5."""
    key = f"verify/{size}"
    start = client.source.take(size)
    expected = client.source.md5(start, size)
    etag = await client.put_at(key, start, size)
    digest = hashlib.md5()
    length = await client.get(key, digest)
    if etag != expected or length != size or digest.hexdigest() != expected:
        raise S3Failure(
            f"verify {size}: ETag {etag}, GET {length} bytes md5 {digest.hexdigest()}, "
            f"expected {size} bytes md5 {expected}"
        )


async def put_then_get(
    runner: PhaseRunner, client: S3Client, size: int, concurrency: int, seconds: float
) -> list[PhaseResult]:
    """PUT new objects for `seconds`, then GET them back (round robin) for `seconds`."""
    keys: list[str] = []

    async def put(worker: int, iteration: int) -> int:
        key = f"{size}/c{concurrency}/{worker}/{iteration}"
        keys.append(key)
        return await client.put(key, size)

    async def get(worker: int, iteration: int) -> int:
        received = await client.get(keys[(worker + iteration * concurrency) % len(keys)])
        if received != size:
            raise S3Failure(f"GET returned {received} bytes instead of {size}")
        return received

    put_result = await runner.run("PUT", size, concurrency, seconds, put)
    return [put_result, await runner.run("GET", size, concurrency, seconds, get)]


async def fill_list_prefix(client: S3Client) -> None:
    """1000 small keys under LIST_PREFIX, then check a full listing walk sees them all."""

    async def fill(worker: int) -> None:
        for index in range(worker, LIST_KEYS, 16):
            await client.put(f"{LIST_PREFIX}{index:04d}", SMALL)

    await asyncio.gather(*(fill(worker) for worker in range(16)))
    seen, token = 0, None
    while True:
        count, token = await client.list_page(LIST_PREFIX, token)
        seen += count
        if token is None:
            break
    if seen != LIST_KEYS:
        raise S3Failure(f"listing walked {seen} keys instead of {LIST_KEYS}")


async def small_ops(
    runner: PhaseRunner, client: S3Client, concurrency: int, seconds: float
) -> list[PhaseResult]:
    """PUT, GET, HEAD of 4 KiB objects and LIST pages, at one concurrency."""
    keys: list[str] = []
    tokens: dict[int, str | None] = {}

    def key_for(worker: int, iteration: int) -> str:
        return keys[(worker + iteration * concurrency) % len(keys)]

    async def put(worker: int, iteration: int) -> int:
        key = f"small/c{concurrency}/{worker}/{iteration}"
        keys.append(key)
        return await client.put(key, SMALL)

    async def get(worker: int, iteration: int) -> int:
        return await client.get(key_for(worker, iteration))

    async def head(worker: int, iteration: int) -> int:
        return await client.head(key_for(worker, iteration))

    async def list_page(worker: int, iteration: int) -> int:
        count, tokens[worker] = await client.list_page(LIST_PREFIX, tokens.get(worker))
        if count != LIST_PAGE:
            raise S3Failure(f"a listing page held {count} keys instead of {LIST_PAGE}")
        return 0

    operations = {"PUT": put, "GET": get, "HEAD": head, "LIST": list_page}
    return [
        await runner.run(name, SMALL, concurrency, seconds, operation)
        for name, operation in operations.items()
    ]


async def run_load(server: ServerProcess, plan: Plan, profile: Path | None) -> dict:
    """Every phase against a started server; returns all results except the limits."""
    await asyncio.sleep(1.0)  # let start-up settle before reading the idle RSS
    idle_rss = server.memory()["VmRSS"]
    client = S3Client(server.endpoint, Signer(server.key_id, server.secret), BUCKET, 16)
    runner = PhaseRunner(server, profile)
    throughput: list[PhaseResult] = []
    small: list[PhaseResult] = []
    try:
        await client.create_bucket()
        for size in (SMALL, *plan.sizes):
            await verify(client, size)
        for size in plan.sizes:
            for concurrency in CONCURRENCIES:
                throughput += await put_then_get(runner, client, size, concurrency, plan.seconds)
        await fill_list_prefix(client)
        for concurrency in CONCURRENCIES:
            small += await small_ops(runner, client, concurrency, plan.small_seconds)
    finally:
        await client.close()
    return {
        "verified": [SMALL, *plan.sizes],
        "throughput": [phase.summary() for phase in throughput],
        "small_ops": [phase.summary() for phase in small],
        "server": {"idle_rss": idle_rss, "peak_rss": server.memory()["VmHWM"]},
    }


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(args: argparse.Namespace, root: Path) -> dict:
    plan = QUICK if args.quick else FULL
    began, loadavg_before = time.monotonic(), loadavg()
    print("measuring machine limits...", file=sys.stderr)
    limits = machine.measure(root, plan.loopback_bytes, plan.disk_bytes)
    server_cpus, client_cpus = split_cpus(not args.no_pin)
    server = ServerProcess(root, new_credentials(), server_cpus)
    try:
        server.start()
        print(f"server pid {server.pid} on {server.endpoint}; running phases", file=sys.stderr)
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)
        keep_freed_memory()
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        results = uvloop.run(run_load(server, plan, args.profile))
    finally:
        exit_code = server.stop()
    results["server"]["exit_code"] = exit_code
    results["limits"] = limits
    results["run"] = {
        "quick": args.quick,
        "seconds": time.monotonic() - began,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "server_cpus": sorted(server_cpus or []),
        "client_cpus": sorted(client_cpus or []),
        "loadavg_before": loadavg_before,
        "loadavg_after": loadavg(),
        "verified": ", ".join(map(size_label, results.pop("verified"))),
    }
    results["targets"] = [dataclasses.asdict(t) | {"met": t.met} for t in targets(results)]
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="granary-bench-", dir=args.dir))
    try:
        results = run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    publish(render(results), results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
