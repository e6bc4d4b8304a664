"""How long a `/metrics` scrape takes on a node with many buckets.

Starts one `granary server` (a single node, as bench/server_process.py makes
it), scrapes it with no bucket, then creates `--buckets` buckets holding
`--objects` small objects each (and an unfinished multipart upload in every
tenth), and scrapes again. Prints, for both states, the p50 and max of
`--scrapes` scrapes, the series (sample lines) and the bytes of one scrape.
Per-bucket usage is read from counters kept with the rows, so the scrape
should grow with the number of buckets only, not with their objects.

    python bench/metrics_scrape.py [--buckets 100] [--objects 10] [--scrapes 30] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from server_process import ServerProcess, new_credentials


def scrape_once(port: int) -> tuple[float, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        body = response.read()
    return time.perf_counter() - started, body


def measure(port: int, scrapes: int) -> dict:
    scrape_once(port)  # warm
    times, body = [], b""
    for _ in range(scrapes):
        elapsed, body = scrape_once(port)
        times.append(elapsed)
        time.sleep(0.05)
    lines = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
    return {
        "p50_ms": round(statistics.median(times) * 1000, 2),
        "max_ms": round(max(times) * 1000, 2),
        "series": len(lines),
        "bucket_series": sum(line.startswith("granary_bucket_") for line in lines),
        "bytes": len(body),
    }


def fill(server: ServerProcess, buckets: int, objects: int) -> None:
    s3 = server.boto3_client(retries={"max_attempts": 3}, max_pool_connections=16)

    def one_bucket(index: int) -> None:
        name = f"bucket-{index:04d}"
        s3.create_bucket(Bucket=name)
        for key in range(objects):
            s3.put_object(Bucket=name, Key=f"object-{key}", Body=b"x" * (100 + key))
        if index % 10 == 0:
            s3.create_multipart_upload(Bucket=name, Key="unfinished")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one_bucket, range(buckets)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buckets", type=int, default=100)
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="granary-scrape-") as folder:
        server = ServerProcess(Path(folder), new_credentials(), cpus=None)
        server.start()
        try:
            result = {"empty": measure(server.admin_port, args.scrapes)}
            started = time.perf_counter()
            fill(server, args.buckets, args.objects)
            result["fill_seconds"] = round(time.perf_counter() - started, 1)
            result[f"{args.buckets}_buckets"] = measure(server.admin_port, args.scrapes)
        finally:
            server.stop()
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
