"""The load of one benchmark run against one endpoint, and the server's memory around it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import machine
from loadgen import S3Client, S3Failure, Signer
from phases import PhaseRunner, Watched

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
MB = 1_000_000
CONCURRENCIES = (1, 16)
SMALL = 4 * KIB
LIST_PREFIX = "list/"
LIST_KEYS = 1000
LIST_PAGE = 100
SETTLED_RSS = 100 * MB  # the "back under 100 MB after load"
PEAK_PHASE = ("PUT", 64 * MIB, 16)  # the "peak RSS under 16 concurrent 64 MiB PUTs"


@dataclass(frozen=True)
class Endpoint:
    """Where the load goes: an S3 endpoint, its credentials and the bucket (and key
    prefix) to use there."""

    url: str
    key_id: str
    secret: str
    bucket: str
    prefix: str = ""
    region: str = "us-east-1"

    def client(self, connections: int) -> S3Client:
        signer = Signer(self.key_id, self.secret, self.region)
        return S3Client(self.url, signer, self.bucket, connections, self.prefix)


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    seconds: float  # per throughput phase; every worker moves at least one object
    small_seconds: float  # per small-object phase
    loopback_bytes: int
    disk_bytes: int
    scaling_seconds: float  # per phase of --scaling
    rss_wait: float  # longest wait for the server's RSS to fall after the load


class FloorProbe:
    """The PUT floor of a phase: the hashing, plus one page-cache write of the
    bytes, measured in two ways.

    Probed: which pages the kernel hands out (fresh ones, a host fault each on a
    VM, or ones freed moments ago) drifts over time, so the write cost is probed
    just before and just after the phase and the floor uses their mean. The probe
    files are kept until the phase is over: deleted at once, they would give the
    server their cheap, just-freed pages.

    In the server: a Granary node counts the CPU time of the write calls that
    copy its block files into the page cache (`granary_block_write_copy_cpu_seconds`),
    so the same write is measured when and where it happened. On this VM its cost
    swings from 0.2 to 17 CPU-s/GiB between spells, and probes a few seconds
    apart disagree by as much: only the floor measured in the server says what the
    rest of a PUT costs. Other stores (`--endpoint`) have no such counter.
    """

    COPY_COUNTER = "granary_block_write_copy_cpu_seconds"

    def __init__(
        self,
        limits: dict[str, float],
        scratch: Path,
        counter: Callable[[str], float | None] | None = None,
    ) -> None:
        self.limits = limits
        self.scratch = scratch
        self.counter = counter

    def _copy_cpu(self) -> float | None:
        return None if self.counter is None else self.counter(self.COPY_COUNTER)

    @contextlib.contextmanager
    def around_phase(self) -> Iterator[dict[str, float]]:
        """Yields a dict filled with the phase's readings once the phase (the `with`
        body) ended; `floors` makes the floors from them."""
        paths = [self.scratch / f"floor-probe-{secrets.token_hex(4)}-{n}.bin" for n in (0, 1)]
        readings: dict[str, float] = {}
        try:
            before = machine.kept_page_cache_write_cost(paths[0])
            copied_before = self._copy_cpu()
            yield readings
            copied_after = self._copy_cpu()
            after = machine.kept_page_cache_write_cost(paths[1])
        finally:
            for path in paths:
                path.unlink(missing_ok=True)
        readings.update(page_cache_write_before=before, page_cache_write_after=after)
        if copied_before is not None and copied_after is not None:
            readings["write_copy_cpu_s"] = copied_after - copied_before

    def floors(self, readings: dict[str, float], moved: int) -> dict[str, float]:
        """The phase's floors (CPU-s/GiB) from its `readings` and the bytes it moved."""
        page_cache = (readings["page_cache_write_before"] + readings["page_cache_write_after"]) / 2
        hashing = machine.hashing_floor(self.limits)
        floors = readings | {
            "page_cache_write_cpu_s_per_gib": page_cache,
            "hashing_floor_cpu_s_per_gib": hashing,
            "floor_cpu_s_per_gib": hashing + page_cache,
        }
        if "write_copy_cpu_s" in readings and moved:
            copy = readings["write_copy_cpu_s"] / (moved / GIB)
            floors["write_copy_cpu_s_per_gib"] = copy
            floors["in_server_floor_cpu_s_per_gib"] = hashing + copy
        return floors


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
    runner: PhaseRunner,
    client: S3Client,
    size: int,
    concurrency: int,
    seconds: float,
    probe: FloorProbe | None = None,
) -> list[dict]:
    """PUT new objects for `seconds`, then GET them back (round robin) for `seconds`;
    the PUT's floor is probed first for objects of 1 MiB and more."""
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

    if probe is not None and size >= MIB:
        with probe.around_phase() as readings:
            put_phase = await runner.run("PUT", size, concurrency, seconds, put)
        put_summary = put_phase.summary() | probe.floors(readings, put_phase.moved)
    else:
        put_summary = (await runner.run("PUT", size, concurrency, seconds, put)).summary()
    get_summary = (await runner.run("GET", size, concurrency, seconds, get)).summary()
    return [put_summary, get_summary]


async def reference_gets(
    url: str, server: Watched, sizes: tuple[int, ...], seconds: float
) -> list[dict]:
    """The GET phases of `run_load`, sent to the reference server (reference_get.py),
    which answers a key that is a number with that many bytes."""
    client = Endpoint(url, "reference", "reference", "reference").client(16)
    runner = PhaseRunner(server)

    def get_of(size: int) -> Callable[[int, int], Awaitable[int]]:
        async def get(worker: int, iteration: int) -> int:
            received = await client.get(str(size))
            if received != size:
                raise S3Failure(f"reference GET returned {received} bytes instead of {size}")
            return received

        return get

    try:
        return [
            (await runner.run("GET", size, concurrency, seconds, get_of(size))).summary()
            for size in sizes
            for concurrency in CONCURRENCIES
        ]
    finally:
        await client.close()


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
) -> list[dict]:
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
        (await runner.run(name, SMALL, concurrency, seconds, operation)).summary()
        for name, operation in operations.items()
    ]


async def rss_after_load(server: Watched, wait: float) -> dict[str, float | int | None]:
    """RSS right after the load, then once a second until it is under SETTLED_RSS or
    `wait` seconds have passed."""
    start = time.monotonic()
    first = rss = server.memory()["VmRSS"]
    while rss >= SETTLED_RSS and time.monotonic() - start < wait:
        await asyncio.sleep(1.0)
        rss = server.memory()["VmRSS"]
    settled = rss < SETTLED_RSS
    return {
        "pss_at_end_of_wait": server.memory()["Pss"],
        "rss_after_load": first,
        "rss_settled_after_s": time.monotonic() - start if settled else None,
        "rss_at_end_of_wait": rss,
        "rss_wait_s": wait,
    }


async def run_load(
    endpoint: Endpoint,
    server: Watched | None,
    plan: Plan,
    probe: FloorProbe,
    profile: Path | None,
) -> dict:
    """Every phase against one endpoint; the server's CPU and memory if it is watched."""
    await asyncio.sleep(1.0)  # let start-up settle before reading the idle RSS
    memory: dict[str, float | int | None] = {}
    if server:
        idle = server.memory()
        memory["idle_rss"], memory["idle_pss"] = idle["VmRSS"], idle["Pss"]
    client = endpoint.client(16)
    runner = PhaseRunner(server, profile)
    throughput: list[dict] = []
    small: list[dict] = []
    try:
        await client.create_bucket()
        for size in (SMALL, *plan.sizes):
            await verify(client, size)
        for size in plan.sizes:
            for concurrency in CONCURRENCIES:
                throughput += await put_then_get(
                    runner, client, size, concurrency, plan.seconds, probe
                )
                if server and ("PUT", size, concurrency) == PEAK_PHASE:
                    memory["peak_rss_16x64mib_put"] = server.memory()["VmHWM"]
        await fill_list_prefix(client)
        for concurrency in CONCURRENCIES:
            small += await small_ops(runner, client, concurrency, plan.small_seconds)
    finally:
        await client.close()
    if server:
        memory |= await rss_after_load(server, plan.rss_wait)
        memory["peak_rss"] = server.memory()["VmHWM"]
    return {
        "verified": [SMALL, *plan.sizes],
        "throughput": throughput,
        "small_ops": small,
        "server": memory,
    }
