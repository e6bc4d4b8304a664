"""Timed phases: N concurrent workers repeating one operation, and what it cost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from proc_watch import CLOCK_TICKS
from profiling import profiled

GIB = 1 << 30
MB = 1_000_000

# op(worker, iteration) -> bytes moved by that request
Operation = Callable[[int, int], Awaitable[int]]


@dataclass(frozen=True)
class ExternalRun:
    """What an external load generator (a child process) reported of one phase."""

    driver: str
    requests: int
    moved: int
    cpu: float  # CPU seconds of the child process
    latency_ms: Mapping[float, float]  # percentile (0.5, 0.99) -> ms


# Runs the external load to its end (blocking: called on a worker thread).
ExternalLoad = Callable[[], ExternalRun]


class Watched(Protocol):
    """What a phase reads of the server: a ProcessWatch, a ServerProcess or a Cluster."""

    @property
    def pid(self) -> int: ...

    def cpu_seconds(self) -> float: ...

    def memory(self) -> dict[str, int]: ...


def machine_cpu_seconds() -> tuple[float, float]:
    """CPU seconds of all cores since boot (/proc/stat): spent in tasks (user, system,
    and steal by the hypervisor), and in interrupts (irq + softirq: loopback packets)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + steal) / CLOCK_TICKS, (irq + softirq) / CLOCK_TICKS


@dataclass
class PhaseResult:
    name: str
    size: int
    concurrency: int
    ops: int
    moved: int
    seconds: float
    server_cpu: float | None  # None: the server's processes are not watched
    client_cpu: float
    other_cpu: float  # includes the server's when it is not watched
    irq_cpu: float
    server_rss: int | None
    latencies: list[float] = field(repr=False)
    hot_spots: list[tuple[str, float]] = field(default_factory=list)
    driver: str = "python"  # the load generator: this process, or an external one (wrk)
    # percentile -> ms, as an external load generator reported them (no latency list)
    reported_latency_ms: Mapping[float, float] = field(default_factory=dict)

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.moved / self.seconds / MB

    def latency_ms(self, fraction: float) -> float:
        if fraction in self.reported_latency_ms:
            return self.reported_latency_ms[fraction]
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    @property
    def server_cpu_per_gib(self) -> float | None:
        if self.server_cpu is None:
            return None
        return self.server_cpu / (self.moved / GIB) if self.moved else 0.0

    @property
    def server_cpu_ms_per_op(self) -> float | None:
        return None if self.server_cpu is None else self.server_cpu / self.ops * 1000

    @property
    def other_busy(self) -> float:
        """Cores' worth of CPU every other task used meanwhile: neighbours, kernel
        threads (writeback, reclaim) and time stolen by the hypervisor."""
        return self.other_cpu / self.seconds

    @property
    def irq_busy(self) -> float:
        """Cores' worth of interrupt handling, mostly the loopback traffic itself."""
        return self.irq_cpu / self.seconds

    @property
    def client_busy(self) -> float:
        """Share of one core the load generator used (near 1.0: it may be the bottleneck)."""
        return self.client_cpu / self.seconds

    def summary(self) -> dict:
        data = asdict(self)
        del data["latencies"], data["reported_latency_ms"]
        data.update(
            ops_per_s=self.ops_per_s,
            mb_per_s=self.mb_per_s,
            p50_ms=self.latency_ms(0.50),
            p99_ms=self.latency_ms(0.99),
            server_cpu_s_per_gib=self.server_cpu_per_gib,
            server_cpu_ms_per_op=self.server_cpu_ms_per_op,
            client_busy=self.client_busy,
            other_busy=self.other_busy,
            irq_busy=self.irq_busy,
        )
        return data


@dataclass
class PhaseRunner:
    """Runs phases against one server (watched if given), optionally under py-spy."""

    server: Watched | None
    profile_dir: Path | None = None

    def _cpu(self) -> tuple[float, ...]:
        """CPU seconds so far: the server's, this client's, the machine's tasks' and irqs'."""
        server = self.server.cpu_seconds() if self.server else 0.0
        return server, time.process_time(), *machine_cpu_seconds()

    async def run(
        self,
        name: str,
        size: int,
        concurrency: int,
        duration: float,
        operation: Operation,
        min_per_worker: int = 1,
    ) -> PhaseResult:
        """Each worker repeats `operation` until `duration` is over (and at least
        `min_per_worker` times); the phase ends when the last request ends."""
        latencies: list[float] = []
        moved = 0

        async def worker(index: int) -> None:
            nonlocal moved
            iteration = 0
            while iteration < min_per_worker or time.perf_counter() < deadline:
                began = time.perf_counter()
                count = await operation(index, iteration)
                latencies.append(time.perf_counter() - began)
                moved += count  # not `moved += await ...`: that reads `moved` before awaiting
                iteration += 1

        async def all_workers() -> int:
            nonlocal deadline
            deadline = time.perf_counter() + duration
            await asyncio.gather(*(worker(i) for i in range(concurrency)))
            return len(latencies)

        deadline = 0.0
        return await self._measured(name, size, concurrency, all_workers, lambda: moved, latencies)

    async def run_external(
        self, name: str, size: int, concurrency: int, load: ExternalLoad
    ) -> PhaseResult:
        """One phase driven by another process: the server's and the machine's CPU are
        read around it as in `run`; the client's CPU is this process's plus the child's."""
        reported: list[ExternalRun] = []

        async def external() -> int:
            reported.append(await asyncio.to_thread(load))
            return reported[0].requests

        return await self._measured(
            name,
            size,
            concurrency,
            external,
            lambda: reported[0].moved,
            [],
            lambda: reported[0],
        )

    async def _measured(
        self,
        name: str,
        size: int,
        concurrency: int,
        phase: Callable[[], Awaitable[int]],
        moved: Callable[[], int],
        latencies: list[float],
        external: Callable[[], ExternalRun] | None = None,
    ) -> PhaseResult:
        """Run `phase` (it returns the requests made) between two readings of the
        server's, this process's and the machine's CPU, under py-spy if asked."""
        profile = (
            self.profile_dir / f"{name}-{size}-c{concurrency}.txt" if self.profile_dir else None
        )
        with profiled(self.server.pid if self.server else None, profile) as hot_spots:
            before = self._cpu()
            start = time.perf_counter()
            requests = await phase()
            seconds = time.perf_counter() - start
            server_cpu, client_cpu, tasks_cpu, irq_cpu = (
                b - a for a, b in zip(before, self._cpu(), strict=True)
            )
        run = external() if external else None
        if run is not None:
            client_cpu += run.cpu
        return PhaseResult(
            name,
            size,
            concurrency,
            requests,
            moved(),
            seconds,
            server_cpu if self.server else None,
            client_cpu,
            tasks_cpu - server_cpu - client_cpu,
            irq_cpu,
            self.server.memory()["VmRSS"] if self.server else None,
            latencies,
            hot_spots,
            run.driver if run else "python",
            run.latency_ms if run else {},
        )
