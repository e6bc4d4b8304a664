"""The printed table and the targets from the performance issue (informative only)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MB = 1_000_000
CLIENT_BOUND = 80
BUSY_HEADER = f"{'srv%':>4} {'cli%':>4} {'irq%':>4} {'other%':>6}"
BUSY_NOTE = (
    "  CPU in % of one core: srv = server, cli = load generator (! above 80%: it may be the\n"
    "  bottleneck), irq = interrupts (loopback), other = every other task (neighbours,\n"
    "  kernel writeback and reclaim, hypervisor steal)"
)
LIMIT_NAMES = {
    "md5": "MD5, 1 core",
    "sha256": "SHA-256, 1 core",
    "blake3": "BLAKE3, 1 core",
    "loopback_tcp": "loopback TCP, 1 stream",
    "disk_write_fsync": "disk write + fsync",
    "disk_read_cold": "disk read, evicted (cold)",
    "disk_read_cached": "disk read, page cache",
}


def publish(text: str, results: dict, out: Path | None) -> None:
    """Print the rendered `text`; with `out`, also write the `results` there as JSON."""
    print(text)
    if out:
        out.write_text(json.dumps(results, indent=2) + "\n")


def size_label(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} B"


def get_limit(limits: dict[str, float]) -> float:
    """What bounds a GET here: the wire, or reading blocks (from the page cache)."""
    return min(limits["loopback_tcp"], limits["disk_read_cached"])


def ratio(phase: dict, limits: dict[str, float]) -> float:
    """PUT against single-core MD5 (the ETag), GET against get_limit."""
    limit = limits["md5"] if phase["name"] == "PUT" else get_limit(limits)
    return phase["mb_per_s"] / limit


@dataclass(frozen=True)
class Target:
    text: str
    value: float
    goal: float
    unit: str
    at_most: bool = False

    @property
    def met(self) -> bool:
        return self.value <= self.goal if self.at_most else self.value >= self.goal

    def line(self) -> str:
        verdict = "PASS" if self.met else "MISS"
        return f"  {verdict}  {self.text:<46} {self.value:>9.2f} {self.unit} (goal {self.goal:g})"


def _phase(results: dict, section: str, name: str, size: int, concurrency: int) -> dict:
    for phase in results[section]:
        if (phase["name"], phase["size"], phase["concurrency"]) == (name, size, concurrency):
            return phase
    raise KeyError((section, name, size, concurrency))


def targets(results: dict) -> list[Target]:
    largest = max(p["size"] for p in results["throughput"])
    small = results["small_ops"][0]["size"]
    put = _phase(results, "throughput", "PUT", largest, 1)
    get = _phase(results, "throughput", "GET", largest, 1)
    label = size_label(largest)
    return [
        Target(f"PUT {label}, 1 stream, vs 1-core MD5", ratio(put, results["limits"]), 0.70, "x"),
        Target(f"GET {label}, 1 stream", get["mb_per_s"], 800, "MB/s"),
        Target("PUT 4 KiB, 16 concurrent", _ops(results, "PUT", small), 1500, "ops/s"),
        Target("GET 4 KiB, 16 concurrent", _ops(results, "GET", small), 3000, "ops/s"),
        Target("server RSS idle after start", results["server"]["idle_rss"] / MB, 80, "MB", True),
    ]


def _ops(results: dict, name: str, size: int) -> float:
    return _phase(results, "small_ops", name, size, 16)["ops_per_s"]


def _busy(phase: dict) -> str:
    """CPU used during the phase by server, client, interrupts and other tasks, in % of a core."""
    server = 100 * phase["server_cpu"] / phase["seconds"]
    client = 100 * phase["client_busy"]
    flag = "!" if client > CLIENT_BOUND else " "
    other = max(0.0, 100 * phase["other_busy"])  # /proc/stat is tick-sampled: can dip below 0
    return f"{server:>4.0f} {client:>4.0f}{flag}{100 * phase['irq_busy']:>4.0f} {other:>6.0f}"


def _limits_lines(limits: dict[str, float]) -> list[str]:
    lines = ["Machine limits (MB/s, best of a few rounds, measured before the server started)"]
    lines += [f"  {LIMIT_NAMES[name]:<28} {value:>9.0f}" for name, value in limits.items()]
    return lines


def _throughput_lines(results: dict) -> list[str]:
    limits = results["limits"]
    lines = [
        "Throughput (PUT ratio: vs 1-core MD5; GET ratio: vs min(loopback, page-cache read) = "
        f"{get_limit(limits):.0f} MB/s)",
        f"  {'op':<4} {'size':>7} {'conc':>4} {'MB/s':>8} {'ratio':>6} {'objects':>7} "
        f"{'srv CPU-s/GiB':>13} {BUSY_HEADER}",
    ]
    for phase in results["throughput"]:
        lines.append(
            f"  {phase['name']:<4} {size_label(phase['size']):>7} {phase['concurrency']:>4} "
            f"{phase['mb_per_s']:>8.0f} {ratio(phase, limits):>6.2f} {phase['ops']:>7} "
            f"{phase['server_cpu_s_per_gib']:>13.2f} {_busy(phase)}"
        )
    return lines


def _small_ops_lines(results: dict) -> list[str]:
    lines = [
        "Small objects (4 KiB bodies; LIST = ListObjectsV2 pages of 100 over a 1000-key prefix)",
        f"  {'op':<4} {'conc':>4} {'ops/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'srv CPU ms/op':>13} {BUSY_HEADER}",
    ]
    for phase in results["small_ops"]:
        lines.append(
            f"  {phase['name']:<4} {phase['concurrency']:>4} {phase['ops_per_s']:>8.0f} "
            f"{phase['p50_ms']:>8.2f} {phase['p99_ms']:>8.2f} "
            f"{phase['server_cpu_ms_per_op']:>13.3f} {_busy(phase)}"
        )
    return lines


def _hot_spot_lines(results: dict) -> list[str]:
    lines = []
    for phase in results["throughput"] + results["small_ops"]:
        if phase["hot_spots"]:
            lines.append(
                f"Server hot spots, {phase['name']} {size_label(phase['size'])} "
                f"c{phase['concurrency']} (own time, share of samples)"
            )
            lines += [f"  {share:6.1%}  {name}" for name, share in phase["hot_spots"]]
    return lines


def render(results: dict) -> str:
    run, server = results["run"], results["server"]
    lines = [
        f"Granary S3 benchmark ({'quick' if run['quick'] else 'full'} run, "
        f"{run['seconds']:.0f} s, MB = 10^6 bytes)",
        f"  cpus {run['cpus']}; server pinned to {run['server_cpus'] or 'none'}, "
        f"client to {run['client_cpus'] or 'none'}; load average before/after "
        f"{run['loadavg_before']} / {run['loadavg_after']}",
        f"  verified (PUT ETag == MD5, GET length and MD5): {run['verified']}",
        "",
        *_limits_lines(results["limits"]),
        "",
        *_throughput_lines(results),
        BUSY_NOTE,
        "",
        *_small_ops_lines(results),
        "",
        f"Server: idle RSS {server['idle_rss'] / MB:.1f} MB, "
        f"peak RSS (VmHWM) {server['peak_rss'] / MB:.1f} MB, exit code {server['exit_code']}",
        "",
        "Targets (informative)",
        *(target.line() for target in targets(results)),
    ]
    hot_spots = _hot_spot_lines(results)
    if hot_spots:
        lines += ["", *hot_spots]
    return "\n".join(lines)
