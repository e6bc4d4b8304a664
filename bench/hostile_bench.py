"""Memory, connections and latency under hostile clients (issue 9), in about a minute.

    python bench/hostile_bench.py                    # the code of this checkout
    cd /work/main && python /work/wt/X/bench/hostile_bench.py --repo .   # another checkout's code
    python bench/hostile_bench.py --out r.json       # also save the numbers as JSON
    python bench/hostile_bench.py --stalled-only     # phase 1 alone, in about 20 s

It starts one `granary server` (the code under `--repo`, default: this
checkout) with RLIMIT_NOFILE set to `--nofile` (1024 by default, a common
distribution default, so that fd exhaustion shows as it would there) and runs:

1. **Stalled readers**: 200 presigned GETs of one 8 MiB object on sockets with a
   64 KiB receive buffer that never read. Server RSS once it stops growing
   (peak), then 8 s after the sockets are closed.
2. **Idle sockets**: 1,100 connections that send nothing; server RSS, then one
   well-behaved GET (5 s timeout): answered or not.
3. **XML bombs**: a client GETs a 4 KiB object in a loop for 5 s, alone, then
   while another client (its own process) sends 8 MiB DeleteObjects bodies of
   2 M elements in a loop; the GET latency p50/p99/max of both phases and the
   statuses the bombs got (400: MalformedXML).

Nothing is asserted; every phase is bounded in time. The load average is
printed: on a shared 2-core machine the latencies move with it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import resource
import socket
import sys
import tempfile
import time
from multiprocessing import Process, Queue
from pathlib import Path

import aiohttp
import server_process
from loadgen import Signer
from server_process import ServerProcess, new_credentials

MiB = 1 << 20
BUCKET = "hostile"
BIG_KEY = "big"
SMALL_KEY = "small"
STALLED_READERS = 200
IDLE_SOCKETS = 1_100
PHASE_SECONDS = 5.0


class LimitedServer(ServerProcess):
    """The server with a given open-file limit (soft and hard)."""

    def __init__(self, root: Path, credentials: tuple[str, str], nofile: int) -> None:
        super().__init__(root, credentials, cpus=None)
        self.nofile = nofile

    def _pin(self) -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))


def rss_mb(server: ServerProcess) -> float:
    return server.memory()["VmRSS"] / 1e6


def settled_rss(server: ServerProcess, seconds: float) -> float:
    """The highest RSS seen until it stops growing for 1 s (or `seconds` pass)."""
    deadline = time.monotonic() + seconds
    peak, last_growth = rss_mb(server), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last_growth < 1.0:
        time.sleep(0.1)
        now = rss_mb(server)
        if now > peak + 1:
            peak, last_growth = now, time.monotonic()
    return peak


def s3_client(server: ServerProcess):
    return server.boto3_client(signature_version="s3v4", retries={"max_attempts": 1})


def stalled_readers(server: ServerProcess) -> dict[str, float]:
    s3 = s3_client(server)
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": BIG_KEY}, ExpiresIn=600
    )
    target = url.split(str(server.s3_port), 1)[1]
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{server.s3_port}\r\n\r\n".encode()
    before = rss_mb(server)
    sockets = []
    try:
        for _ in range(STALLED_READERS):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.settimeout(5)
            try:
                sock.connect(("127.0.0.1", server.s3_port))
                sock.sendall(request)
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
        peak = settled_rss(server, 15)
    finally:
        for sock in sockets:
            sock.close()
    time.sleep(8)
    return {"rss_before_mb": before, "rss_stalled_mb": peak, "rss_after_close_mb": rss_mb(server)}


def one_get(server: ServerProcess, timeout: float) -> tuple[bool, float]:
    s3 = s3_client(server)
    s3.meta.config.connect_timeout = timeout
    s3.meta.config.read_timeout = timeout
    started = time.monotonic()
    try:
        s3.get_object(Bucket=BUCKET, Key=SMALL_KEY)["Body"].read()
    except Exception:
        return False, time.monotonic() - started
    return True, time.monotonic() - started


def idle_sockets(server: ServerProcess) -> dict[str, float | bool]:
    before = rss_mb(server)
    sockets = []
    try:
        for _ in range(IDLE_SOCKETS):
            sock = socket.socket()
            sock.settimeout(5)
            try:
                sock.connect(("127.0.0.1", server.s3_port))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
        time.sleep(1)
        during = rss_mb(server)
        served, seconds = one_get(server, 5.0)
    finally:
        for sock in sockets:
            sock.close()
    return {
        "rss_before_mb": before,
        "rss_idle_sockets_mb": during,
        "get_served": served,
        "get_seconds": seconds,
    }


def percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    return {
        "count": len(ordered),
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "max_ms": ordered[-1] * 1000,
    }


async def get_loop(
    session: aiohttp.ClientSession, server: ServerProcess, signer: Signer
) -> list[float]:
    host = f"127.0.0.1:{server.s3_port}"
    path = f"/{BUCKET}/{SMALL_KEY}"
    latencies = []
    deadline = time.monotonic() + PHASE_SECONDS
    while time.monotonic() < deadline:
        started = time.monotonic()
        headers = signer.headers("GET", host, path, "")
        async with session.get(server.endpoint + path, headers=headers) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"GET answered {response.status}")
        latencies.append(time.monotonic() - started)
    return latencies


async def bomb_loop(endpoint: str, credentials: tuple[str, str], seconds: float) -> list[int]:
    """Send 8 MiB DeleteObjects bodies of 2 M elements for `seconds`; their statuses."""
    body = b"<Delete>" + b"<a/>" * ((8 * MiB - 17) // 4) + b"</Delete>"  # 8 MiB exactly
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    signer = Signer(*credentials)
    host = endpoint.removeprefix("http://")
    statuses = []
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            headers = {**signer.headers("POST", host, f"/{BUCKET}", "delete="), "content-md5": md5}
            async with session.post(
                f"{endpoint}/{BUCKET}?delete=", data=body, headers=headers
            ) as response:
                await response.read()
                statuses.append(response.status)
    return statuses


def bomber(endpoint: str, credentials: tuple[str, str], seconds: float, out: Queue) -> None:
    """The bombing client, in its own process so that it does not slow the measured one."""
    out.put(asyncio.run(bomb_loop(endpoint, credentials, seconds)))


async def xml_bombs(server: ServerProcess) -> dict[str, object]:
    signer = Signer(server.key_id, server.secret)
    async with aiohttp.ClientSession() as session:
        alone = await get_loop(session, server, signer)
        statuses: Queue = Queue()
        credentials = (server.key_id, server.secret)
        process = Process(
            target=bomber, args=(server.endpoint, credentials, PHASE_SECONDS + 1, statuses)
        )
        process.start()
        await asyncio.sleep(0.5)  # the first bomb is on its way
        with_bombs = await get_loop(session, server, signer)
        sent = statuses.get(timeout=60)
        process.join()
    return {
        "alone": percentiles(alone),
        "with_bombs": percentiles(with_bombs),
        "bomb_statuses": {str(code): sent.count(code) for code in sorted(set(sent))},
    }


def prepare(server: ServerProcess) -> None:
    s3 = s3_client(server)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=BIG_KEY, Body=os.urandom(8 * MiB))
    s3.put_object(Bucket=BUCKET, Key=SMALL_KEY, Body=os.urandom(4096))


def render(results: dict) -> str:
    stalled = results["stalled_readers"]
    lines = [
        f"granary from {results['repo']}, RLIMIT_NOFILE {results['nofile']},"
        f" load average {results['load_before']:.1f} before, {results['load_after']:.1f} after",
        f"{STALLED_READERS} stalled presigned GETs of 8 MiB:"
        f" RSS {stalled['rss_before_mb']:.0f} MB -> {stalled['rss_stalled_mb']:.0f} MB,"
        f" {stalled['rss_after_close_mb']:.0f} MB"
        " 8 s after they closed",
    ]
    if "idle_sockets" not in results:
        return "\n".join(lines)
    idle, bombs = results["idle_sockets"], results["xml_bombs"]
    return "\n".join(
        [
            *lines,
            f"{IDLE_SOCKETS} idle sockets: RSS {idle['rss_before_mb']:.0f} ->"
            f" {idle['rss_idle_sockets_mb']:.0f} MB; a GET meanwhile:"
            f" {'served' if idle['get_served'] else 'NOT served'} in {idle['get_seconds']:.2f} s",
            "4 KiB GET latency      count   p50 ms   p99 ms   max ms",
            *(
                f"  {name:<20} {p['count']:>6} {p['p50_ms']:>8.1f} {p['p99_ms']:>8.1f}"
                f" {p['max_ms']:>8.1f}"
                for name, p in (("alone", bombs["alone"]), ("with XML bombs", bombs["with_bombs"]))
            ),
            f"  8 MiB DeleteObjects bombs sent meanwhile, by status: {bombs['bomb_statuses']}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repo", type=Path, default=server_process.REPO)
    parser.add_argument("--nofile", type=int, default=1024)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--stalled-only", action="store_true", help="run phase 1 alone")
    args = parser.parse_args()
    server_process.REPO = args.repo.resolve()  # the code the server runs
    with tempfile.TemporaryDirectory(prefix="granary-hostile-") as folder:
        server = LimitedServer(Path(folder), new_credentials(), args.nofile)
        server.start()
        try:
            prepare(server)
            results = {
                "repo": str(server_process.REPO),
                "nofile": args.nofile,
                "load_before": os.getloadavg()[0],
                "stalled_readers": stalled_readers(server),
            }
            if not args.stalled_only:
                results["idle_sockets"] = idle_sockets(server)
                results["xml_bombs"] = asyncio.run(xml_bombs(server))
            results["load_after"] = os.getloadavg()[0]
        finally:
            server.stop()
    print(render(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
