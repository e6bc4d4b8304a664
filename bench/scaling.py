"""--scaling: the same load against Granary pinned to 1 core, then to 2 cores.

The issue's goal is a throughput that grows with the cores a node is given:
at least 1.7 x from 1 to 2 cores, for 16 streams of 64 MiB and for 4 KiB
objects at concurrency 64. The 64 MiB phases run on the Python load generator;
the small-object ones on wrk when it is installed (see wrk_load.py: the Python
client cannot send 4 KiB requests fast enough without a core of its own).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import uvloop
from phases import PhaseRunner
from server_process import ServerProcess, new_credentials
from workload import KIB, MIB, Endpoint, put_then_get
from wrk_load import WrkDriver, wrk_binary, wrk_put_then_get

CORE_COUNTS = (1, 2)
# (object size, concurrency): PUT then GET of each
LOADS = ((64 * MIB, 16), (4 * KIB, 64))
GOAL = 1.7


def cpu_split() -> tuple[list[int], set[int] | None]:
    """The allowed CPUs, and the load generator's: the CPUs after the first two, or
    None (unpinned, sharing the server's cores) on a 2-CPU machine."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus, set(cpus[2:]) or None


def small_object_driver(folder: Path) -> WrkDriver | None:
    """wrk, pinned as the Python client is (see cpu_split), with its scripts in
    `folder`; None, with a note, when wrk is not installed."""
    binary = wrk_binary()
    if binary is None:
        print(
            "scaling: wrk not found on PATH; 4 KiB phases use the Python load generator,"
            " which may be their bottleneck (cli%)",
            file=sys.stderr,
        )
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return WrkDriver(binary, folder, cpu_split()[1])


async def _load(
    server: ServerProcess, bucket: str, seconds: float, wrk: WrkDriver | None
) -> list[dict]:
    await asyncio.sleep(1.0)  # let start-up settle
    endpoint = Endpoint(server.endpoint, server.key_id, server.secret, bucket)
    client = endpoint.client(max(concurrency for _, concurrency in LOADS))
    runner = PhaseRunner(server)
    phases: list[dict] = []
    try:
        await client.create_bucket()
        for size, concurrency in LOADS:
            if wrk is not None and size < MIB:
                phases += await wrk_put_then_get(
                    runner, client, endpoint, wrk, size, concurrency, seconds
                )
            else:
                phases += await put_then_get(runner, client, size, concurrency, seconds)
    finally:
        await client.close()
    return phases


def run_scaling(
    root: Path, settings: Mapping[str, object], bucket: str, seconds: float
) -> dict[int, list[dict]]:
    """Every LOADS phase against a fresh server per core count; phases by core count."""
    cpus, _ = cpu_split()
    wrk = small_object_driver(root / "wrk")
    by_cores: dict[int, list[dict]] = {}
    for cores in CORE_COUNTS:
        server = ServerProcess(
            root / f"{cores}-cores",
            new_credentials(),
            set(cpus[:cores]),
            {**settings, "s3_processes": cores},  # one S3 process per core
        )
        try:
            server.start()
            by_cores[cores] = uvloop.run(_load(server, bucket, seconds, wrk))
        finally:
            server.stop()
    return by_cores


def scaling_rows(by_cores: dict[int, list[dict]]) -> list[dict]:
    """One row per phase: its load generator, rate (MB/s, or ops/s for small objects),
    p50/p99 latency, server CPU per op, the server's and the client's CPU use (share of
    one core) per core count, in CORE_COUNTS order, and the ratio of the last count's
    rate to the first's."""
    rows = []
    for index, phase in enumerate(by_cores[CORE_COUNTS[0]]):
        unit = "MB/s" if phase["size"] >= MIB else "ops/s"
        runs = [by_cores[cores][index] for cores in CORE_COUNTS]
        rates = [run["mb_per_s" if unit == "MB/s" else "ops_per_s"] for run in runs]
        rows.append(
            {
                "name": phase["name"],
                "size": phase["size"],
                "concurrency": phase["concurrency"],
                "unit": unit,
                "driver": phase["driver"],
                "rates": rates,
                "p50_ms": [run["p50_ms"] for run in runs],
                "p99_ms": [run["p99_ms"] for run in runs],
                "server_ms_per_op": [run["server_cpu_ms_per_op"] for run in runs],
                "server_busy": [run["server_cpu"] / run["seconds"] for run in runs],
                "client_busy": [run["client_busy"] for run in runs],
                "ratio": rates[-1] / rates[0],
                "met": rates[-1] / rates[0] >= GOAL,
            }
        )
    return rows
