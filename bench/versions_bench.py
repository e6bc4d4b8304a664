"""What versioning costs: 4 KiB PUT ops/s in an unversioned and a versioned bucket, and
ListObjectVersions page latency with many versions per key, on one node.

Each PUT phase runs `--seconds` at `--concurrency` over `--keys` keys, first in an
unversioned bucket (a PUT replaces the key's version), then in a versioned one (it
adds one): the ratio is what keeping every version costs a small PUT. Every version
lives in its key's row, so a PUT to a key with many versions rewrites a larger row;
the last phases overwrite `--deep-keys` keys, unversioned, then versioned ones that
already hold `--versions` versions each. Then
pages of ListObjectVersions (max-keys 1000) walk a bucket of `--list-keys` keys of
`--versions` versions each, with the markers each answer gives.

    python bench/versions_bench.py [--seconds 5] [--concurrency 16] [--versions 100]
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
from loadgen import S3Client, S3Failure, Signer, keep_freed_memory
from report import publish
from server_process import ServerProcess, new_credentials

SIZE = 4096
_NEXT_KEY = re.compile(rb"<NextKeyMarker>([^<]*)</NextKeyMarker>")
_NEXT_VERSION = re.compile(rb"<NextVersionIdMarker>([^<]*)</NextVersionIdMarker>")
_VERSION = re.compile(rb"<Version>")
_VERSIONING = (
    b'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<Status>Enabled</Status></VersioningConfiguration>"
)


async def enable_versioning(client: S3Client) -> None:
    async with client._request("PUT", None, [("versioning", "")], data=_VERSIONING) as response:
        body = await response.read()
        if response.status != 200:
            raise S3Failure(f"PutBucketVersioning: {response.status} {body[:300]!r}")


async def put_phase(client: S3Client, keys: list[str], seconds: float, concurrency: int) -> dict:
    """PUT 4 KiB bodies to `keys` in turn for `seconds`: ops/s and latency."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    turn = iter(range(1 << 62))

    async def worker() -> None:
        while time.perf_counter() < deadline:
            key = keys[next(turn) % len(keys)]
            began = time.perf_counter()
            await client.put(key, SIZE)
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "ops_per_s": len(latencies) / elapsed,
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
        "puts": len(latencies),
    }


async def fill_versions(client: S3Client, keys: list[str], versions: int, concurrency: int) -> None:
    """`versions` versions of each key, written one round of keys after another."""

    async def worker(queue) -> None:
        for key in queue:
            await client.put(key, SIZE)

    for _ in range(versions):
        queue = iter(keys)
        await asyncio.gather(*(worker(queue) for _ in range(concurrency)))


async def time_version_pages(client: S3Client, pages: int) -> dict:
    """Walk ListObjectVersions pages (max-keys 1000) from the start, as a client does."""
    latencies: list[float] = []
    listed = 0
    key_marker: str | None = None
    version_marker: str | None = None
    for _ in range(pages):
        params = [("versions", ""), ("max-keys", "1000")]
        if key_marker is not None:
            params.append(("key-marker", key_marker))
        if version_marker is not None:
            params.append(("version-id-marker", version_marker))
        began = time.perf_counter()
        async with client._request("GET", None, params) as response:
            body = await response.read()
            if response.status != 200:
                raise S3Failure(f"ListObjectVersions: {response.status} {body[:300]!r}")
        latencies.append(time.perf_counter() - began)
        listed += len(_VERSION.findall(body))
        next_key, next_version = _NEXT_KEY.search(body), _NEXT_VERSION.search(body)
        if next_key is None:
            key_marker = version_marker = None  # from the start again
            continue
        key_marker = next_key.group(1).decode()
        version_marker = next_version.group(1).decode() if next_version else None
    ordered = sorted(latencies)
    return {
        "pages": len(latencies),
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
        "versions_per_page": listed / len(latencies),
    }


async def run(endpoint: str, credentials: tuple[str, str], args: argparse.Namespace) -> dict:
    signer = Signer(*credentials)
    plain = S3Client(endpoint, signer, "plain", args.concurrency)
    versioned = S3Client(endpoint, signer, "versioned", args.concurrency)
    listed = S3Client(endpoint, signer, "listed", args.concurrency)
    try:
        for client in (plain, versioned, listed):
            await client.create_bucket()
        await enable_versioning(versioned)
        await enable_versioning(listed)
        keys = [f"k/{index:05d}" for index in range(args.keys)]
        results = {
            "unversioned": await put_phase(plain, keys, args.seconds, args.concurrency),
            "versioned": await put_phase(versioned, keys, args.seconds, args.concurrency),
        }
        deep = [f"deep/{index:03d}" for index in range(args.deep_keys)]
        results[f"unversioned, {args.deep_keys} keys"] = await put_phase(
            plain, deep, args.seconds, args.concurrency
        )
        await fill_versions(versioned, deep, args.versions, args.concurrency)
        results[f"versioned, {args.deep_keys} keys of {args.versions} versions"] = await put_phase(
            versioned, deep, args.seconds, args.concurrency
        )
        list_keys = [f"l/{index:04d}" for index in range(args.list_keys)]
        await fill_versions(listed, list_keys, args.versions, args.concurrency)
        pages = await time_version_pages(listed, args.pages)
    finally:
        for client in (plain, versioned, listed):
            await client.close()
    return {"puts": results, "list_versions": pages, "versions_per_key": args.versions}


def render(report: dict) -> str:
    puts = report["puts"]
    base = puts["unversioned"]["ops_per_s"]
    lines = [f"{'4 KiB PUT':<36} {'ops/s':>8} {'vs unversioned':>15} {'p50 ms':>8} {'p99 ms':>8}"]
    for name, row in puts.items():
        lines.append(
            f"{name:<36} {row['ops_per_s']:>8.0f} {row['ops_per_s'] / base:>15.2f}"
            f" {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f}"
        )
    pages = report["list_versions"]
    lines.append(
        f"ListObjectVersions, {report['versions_per_key']} versions a key: "
        f"{pages['pages']} pages of {pages['versions_per_page']:.0f} versions, "
        f"p50 {pages['p50_ms']:.1f} ms, p99 {pages['p99_ms']:.1f} ms"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each PUT phase")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--keys", type=int, default=1000, help="keys the PUT phases write")
    parser.add_argument("--versions", type=int, default=100, help="versions a key")
    parser.add_argument(
        "--deep-keys", type=int, default=200, help="keys filled with --versions versions"
    )
    parser.add_argument("--list-keys", type=int, default=50, help="keys of the listed bucket")
    parser.add_argument("--pages", type=int, default=20, help="ListObjectVersions pages timed")
    parser.add_argument("--dir", type=Path, help="where the node's folders go")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    keep_freed_memory()
    root = Path(tempfile.mkdtemp(prefix="granary-versions-bench-", dir=args.dir))
    credentials = new_credentials()
    server = ServerProcess(root / "node", credentials, None)
    try:
        server.start()
        report = uvloop.run(run(server.endpoint, credentials, args))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    publish(render(report), report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
