"""Listing latency as one bucket grows: ListObjectsV2 and ListMultipartUploads pages
on a 3-node cluster (3 zones, replication factor 3).

The bucket is filled step by step (10k, then 100k objects by default) with small
objects PUT at high concurrency, spread over the three nodes' endpoints. After
each step, `--pages` pages of each listing are timed, walking the bucket from
its first key with the continuation each answer gives (max-keys / max-uploads
1000), and p50/p99 are printed with the keys per page and the failed pages
(a 503 is what an unbounded range read over the RPC frame limit answers).
The goal is a flat curve: a page should cost the same whatever the bucket
holds. Bodies are `--size` bytes (default 1000, stored inline in the object
row). The fill runs at ~2,000 PUT/s on an idle 2-core machine (a few hundred
when it is shared), so 1M objects (`--counts 10000,100000,1000000`) take
10 minutes or more; they are not in the default run.

    python bench/listing_bench.py [--counts 10000,100000] [--pages 20] [--out r.json]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import uvloop
from cluster import Cluster
from loadgen import S3Client, S3Failure, Signer, keep_freed_memory
from report import publish
from server_process import new_credentials

FILL_CONCURRENCY = 48
PAGE_SIZE = "1000"
_NEXT_TOKEN = re.compile(rb"<NextContinuationToken>([^<]*)</NextContinuationToken>")
_NEXT_KEY_MARKER = re.compile(rb"<NextKeyMarker>([^<]*)</NextKeyMarker>")
_KEYS = re.compile(rb"<Key>")


def key_name(index: int) -> str:
    return f"obj/{index:08d}"


async def fill(clients: list[S3Client], start: int, end: int, size: int) -> float:
    """PUT objects start..end-1 (FILL_CONCURRENCY at a time); returns objects per second."""
    began = time.perf_counter()
    indexes = iter(range(start, end))

    async def worker(number: int) -> None:
        client = clients[number % len(clients)]
        for index in indexes:
            await client.put(key_name(index), size)

    await asyncio.gather(*(worker(n) for n in range(FILL_CONCURRENCY)))
    return (end - start) / (time.perf_counter() - began)


async def time_pages(client: S3Client, operation: str, pages: int) -> dict:
    """Walk `pages` pages of one listing from the start; their latencies and sizes."""
    if operation == "ListObjectsV2":
        base, next_param, pattern = (
            [("list-type", "2"), ("max-keys", PAGE_SIZE)],
            "continuation-token",
            _NEXT_TOKEN,
        )
    else:
        base, next_param, pattern = (
            [("uploads", ""), ("max-uploads", PAGE_SIZE)],
            "key-marker",
            _NEXT_KEY_MARKER,
        )
    latencies: list[float] = []
    keys = failures = 0
    cursor: str | None = None
    for _ in range(pages):
        params = base + ([(next_param, cursor)] if cursor is not None else [])
        began = time.perf_counter()
        try:
            async with client._request("GET", None, params) as response:
                body = await response.read()
                status = response.status
        except (S3Failure, OSError):
            status, body = 0, b""
        latencies.append(time.perf_counter() - began)
        if status != 200:
            failures += 1
            continue
        keys += len(_KEYS.findall(body))
        found = pattern.search(body)
        cursor = found.group(1).decode() if found else None
    ordered = sorted(latencies)
    return {
        "operation": operation,
        "pages": len(latencies),
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
        "keys_per_page": keys / max(1, len(latencies) - failures),
        "failed": failures,
    }


async def run(endpoints: list[str], credentials: tuple[str, str], args) -> list[dict]:
    signer = Signer(*credentials)
    clients = [S3Client(e, signer, "listing", FILL_CONCURRENCY) for e in endpoints]
    rows: list[dict] = []
    try:
        await clients[0].create_bucket()
        filled = 0
        for count in args.counts:
            rate = await fill(clients, filled, count, args.size)
            filled = count
            print(f"filled {count} objects ({rate:.0f} PUT/s)", flush=True)
            for operation in ("ListObjectsV2", "ListMultipartUploads"):
                result = await time_pages(clients[0], operation, args.pages)
                rows.append({"objects": count, **result, "fill_put_per_s": rate})
                print(render(rows[-1:]).splitlines()[-1], flush=True)
    finally:
        for client in clients:
            await client.close()
    return rows


def render(rows: list[dict]) -> str:
    lines = [
        f"{'objects':>9} {'operation':<22} {'pages':>5} {'p50 ms':>9} {'p99 ms':>9}"
        f" {'keys/page':>9} {'failed':>6}"
    ]
    for row in rows:
        lines.append(
            f"{row['objects']:>9} {row['operation']:<22} {row['pages']:>5}"
            f" {row['p50_ms']:>9.1f} {row['p99_ms']:>9.1f} {row['keys_per_page']:>9.1f}"
            f" {row['failed']:>6}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--counts",
        type=lambda text: sorted(int(n) for n in text.split(",")),
        default=[10_000, 100_000],
        help="bucket sizes to measure at, comma-separated (e.g. 10000,100000,1000000)",
    )
    parser.add_argument("--pages", type=int, default=20, help="pages timed per listing")
    parser.add_argument("--size", type=int, default=1000, help="object body size in bytes")
    parser.add_argument("--dir", type=Path, help="where the cluster's folders go")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    keep_freed_memory()
    root = Path(tempfile.mkdtemp(prefix="granary-listing-bench-", dir=args.dir))
    credentials = new_credentials()
    cluster = Cluster(root / "cluster", credentials, 3)
    try:
        cluster.start()
        rows = uvloop.run(run([n.endpoint for n in cluster.nodes], credentials, args))
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    publish(render(rows), {"listing": rows}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
