"""The printed report of s3_bench: limits, one block per result set, scaling, targets."""

from __future__ import annotations

import json
from pathlib import Path

from machine import get_limit, hashing_floor

MB = 1_000_000
MIB = 1 << 20
CLIENT_BOUND = 80
BUSY_HEADER = f"{'srv%':>4} {'cli%':>4} {'irq%':>4} {'other%':>6}"
BUSY_NOTE = (
    "  CPU in % of one core: srv = server, cli = load generator (! above 80%: it may be the\n"
    "  bottleneck), irq = interrupts (loopback), other = every other task (neighbours,\n"
    "  kernel writeback and reclaim, hypervisor steal)"
)
UNWATCHED_NOTE = "  server not watched (no --server-pid): its CPU is counted in other%"
FLOOR_NOTE = (
    "  floor = CPU-s/GiB of MD5 + BLAKE3 + zstd + one page-cache write (pcw, the mean of probes\n"
    "  just before and after the phase: ~0.2 into pages the guest just freed, 2 to 9 into fresh\n"
    "  ones on a VM); no SHA-256: the load generator sends UNSIGNED-PAYLOAD.\n"
    "  copy = the same page-cache write measured in the server (the CPU time of its block-file\n"
    "  write calls); srv/fl* = server CPU over MD5 + BLAKE3 + zstd + copy (goal <= 1.3)"
)
LIMIT_NAMES = {
    "md5": ("MD5, 1 core", "MB/s"),
    "sha256": ("SHA-256, 1 core", "MB/s"),
    "blake3": ("BLAKE3, 1 core", "MB/s"),
    "zstd": ("zstd -1, incompressible 1 MiB", "MB/s"),
    "loopback_tcp": ("loopback TCP, 1 stream", "MB/s"),
    "disk_write_fsync": ("disk write + fsync", "MB/s"),
    "disk_read_cold": ("disk read, evicted (cold)", "MB/s"),
    "disk_read_cached": ("disk read, page cache", "MB/s"),
    "page_cache_write_cpu": ("write into a new file", "CPU-s/GiB"),
    "freed_page_write_cpu": ("same, into just-freed pages", "CPU-s/GiB"),
    "fanout_write_cpu": ("same as 1 MiB files in ab/cd/", "CPU-s/GiB"),
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


def ratio(phase: dict, limits: dict[str, float]) -> float | None:
    """PUT against single-core MD5 (the ETag), GET against the reference server."""
    if phase["name"] == "PUT":
        return phase["mb_per_s"] / limits["md5"]
    return phase.get("vs_reference")


def _number(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def _client(busy: float) -> str:
    """The load generator's CPU use in % of a core, flagged when it may be the bottleneck."""
    return f"{100 * busy:>4.0f}{'!' if 100 * busy > CLIENT_BOUND else ' '}"


def _busy(phase: dict) -> str:
    """CPU used during the phase by server, client, interrupts and other tasks, in % of a core."""
    server = None if phase["server_cpu"] is None else 100 * phase["server_cpu"] / phase["seconds"]
    other = max(0.0, 100 * phase["other_busy"])  # /proc/stat is tick-sampled: can dip below 0
    return (
        f"{_number(server, 4, 0)} {_client(phase['client_busy'])}"
        f"{100 * phase['irq_busy']:>4.0f} {other:>6.0f}"
    )


def _peer(phase: dict, compared: bool) -> str:
    return f" {_number(phase.get('vs_peer'), 7, 2)}" if compared else ""


def _limits_lines(limits: dict[str, float]) -> list[str]:
    lines = ["Machine limits (speeds: best of a few rounds; measured before the load)"]
    lines += [
        f"  {LIMIT_NAMES[name][0]:<30} {value:>9.{0 if unit == 'MB/s' else 2}f} {unit}"
        for name, value in limits.items()
        for unit in (LIMIT_NAMES[name][1],)
    ]
    lines.append(
        f"  PUT floor: MD5 + BLAKE3 + zstd = {hashing_floor(limits):.2f} CPU-s/GiB, plus the "
        "page-cache write (probed around each PUT phase, and measured in the server)"
    )
    return lines


def _throughput_lines(result_set: dict, limits: dict[str, float], compared: bool) -> list[str]:
    lines = [
        "Throughput (PUT ratio: vs 1-core MD5; GET ratio: vs the reference server's GET of the "
        "same size and concurrency, below)",
        f"  {'op':<4} {'size':>7} {'conc':>4} {'MB/s':>8} {'ratio':>6} {'objects':>7} "
        f"{'srv CPU-s/GiB':>13} {'pcw':>5} {'floor':>6} {'srv/floor':>9} {'copy':>5} {'srv/fl*':>7}"
        f"{' vs peer' if compared else ''} {BUSY_HEADER}",
    ]
    for phase in result_set["throughput"]:
        floor = phase.get("floor_cpu_s_per_gib")
        page_cache = phase.get("page_cache_write_cpu_s_per_gib")
        server = phase["server_cpu_s_per_gib"]
        over_floor = server / floor if floor and server is not None else None
        copy = phase.get("write_copy_cpu_s_per_gib")
        in_server = phase.get("in_server_floor_cpu_s_per_gib")
        over_in_server = server / in_server if in_server and server is not None else None
        lines.append(
            f"  {phase['name']:<4} {size_label(phase['size']):>7} {phase['concurrency']:>4} "
            f"{phase['mb_per_s']:>8.0f} {_number(ratio(phase, limits), 6, 2)} {phase['ops']:>7} "
            f"{_number(server, 13, 2)} {_number(page_cache, 5, 2)} {_number(floor, 6, 2)} "
            f"{_number(over_floor, 9, 2)} {_number(copy, 5, 2)} {_number(over_in_server, 7, 2)}"
            f"{_peer(phase, compared)} {_busy(phase)}"
        )
    return [*lines, FLOOR_NOTE]


def _reference_lines(reference: list[dict], limits: dict[str, float]) -> list[str]:
    lines = [
        "GET limit: the reference server (bench/reference_get.py: sendfile from the page cache,",
        "  nothing else; pinned as the server is, the same client)",
        f"  {'size':>7} {'conc':>4} {'MB/s':>8} {'vs loopback':>11} {'srv CPU-s/GiB':>13} "
        f"{BUSY_HEADER}",
    ]
    lines += [
        f"  {size_label(p['size']):>7} {p['concurrency']:>4} {p['mb_per_s']:>8.0f} "
        f"{p['mb_per_s'] / get_limit(limits):>11.2f} {_number(p['server_cpu_s_per_gib'], 13, 2)} "
        f"{_busy(p)}"
        for p in reference
    ]
    return lines


def _small_ops_lines(result_set: dict, compared: bool) -> list[str]:
    lines = [
        "Small objects (4 KiB bodies; LIST = ListObjectsV2 pages of 100 over a 1000-key prefix)",
        f"  {'op':<4} {'conc':>4} {'ops/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'srv CPU ms/op':>13}{' vs peer' if compared else ''} {BUSY_HEADER}",
    ]
    for phase in result_set["small_ops"]:
        lines.append(
            f"  {phase['name']:<4} {phase['concurrency']:>4} {phase['ops_per_s']:>8.0f} "
            f"{phase['p50_ms']:>8.2f} {phase['p99_ms']:>8.2f} "
            f"{_number(phase['server_cpu_ms_per_op'], 13, 3)}{_peer(phase, compared)} "
            f"{_busy(phase)}"
        )
    return lines


def _memory_lines(server: dict) -> list[str]:
    if "idle_rss" not in server:
        return ["Server memory: not watched (--server-pid)"]
    settled = server["rss_settled_after_s"]
    after = (
        f"under 100 MB {settled:.0f} s later"
        if settled is not None
        else f"{server['rss_at_end_of_wait'] / MB:.1f} MB after {server['rss_wait_s']:g} s"
    )
    peak_put = server.get("peak_rss_16x64mib_put")
    lines = [
        f"Server memory (MB): idle before the load {server['idle_rss'] / MB:.1f}; peak (VmHWM) up "
        f"to the 64 MiB c16 PUT {'-' if peak_put is None else f'{peak_put / MB:.1f}'}, "
        f"at the end {server['peak_rss'] / MB:.1f}",
        f"  right after the load {server['rss_after_load'] / MB:.1f}, {after}",
    ]
    if "exit_code" in server:
        lines[-1] += f"; exit code {server['exit_code']}"
    if "idle_pss" in server:
        lines.append(
            f"  PSS (shared pages split among the node's processes): idle "
            f"{server['idle_pss'] / MB:.1f}, at the end of the wait "
            f"{server['pss_at_end_of_wait'] / MB:.1f}"
        )
    return lines


def _target_line(target: dict) -> str:
    if target["met"] is None:
        return f"  SKIP  {target['text']:<50} ({target['skipped']})"
    verdict = "PASS" if target["met"] else "MISS"
    return (
        f"  {verdict}  {target['text']:<50} {target['value']:>8.2f} {target['unit']:<2} "
        f"(goal {'<=' if target['at_most'] else '>='} {target['goal']:g})"
    )


def _hot_spot_lines(result_set: dict) -> list[str]:
    lines = []
    for phase in result_set["throughput"] + result_set["small_ops"]:
        if phase["hot_spots"]:
            lines.append(
                f"Server hot spots, {phase['name']} {size_label(phase['size'])} "
                f"c{phase['concurrency']} (own time, share of samples)"
            )
            lines += [f"  {share:6.1%}  {name}" for name, share in phase["hot_spots"]]
    return lines


def _result_set_lines(result_set: dict, limits: dict[str, float], compared: bool) -> list[str]:
    lines = [
        f"=== {result_set['label']} ===",
        *_throughput_lines(result_set, limits, compared),
        BUSY_NOTE,
    ]
    if not result_set["server_watched"]:
        lines.append(UNWATCHED_NOTE)
    lines += [
        "",
        *_small_ops_lines(result_set, compared),
        "",
        *_memory_lines(result_set["server"]),
        "",
        "Targets (informative)",
        *(_target_line(target) for target in result_set["targets"]),
    ]
    hot_spots = _hot_spot_lines(result_set)
    return lines + (["", *hot_spots] if hot_spots else [])


def _percent_pair(shares: list[float], flag_above: float | None = None) -> str:
    """Two shares of a core as "a/b" percents, each with "!" above `flag_above` %."""
    return "/".join(
        f"{100 * share:.0f}{'!' if flag_above and 100 * share > flag_above else ''}"
        for share in shares
    )


def _figure(value: float | None) -> str:
    """A positive number with about three significant digits, never in e-notation."""
    if value is None:
        return "-"
    digits = next((d for d, bound in ((0, 100), (1, 10), (2, 1)) if value >= bound), 3)
    return f"{value:.{digits}f}"


def _pair(values: list[float | None]) -> str:
    """Two numbers as "a/b"."""
    return "/".join(map(_figure, values))


def _scaling_lines(scaling: dict) -> list[str]:
    lines = [
        f"=== scaling, {scaling['label']}: server pinned to 1 core, then 2 cores; "
        f"{scaling['client']} ===",
        f"  {'op':<4} {'size':>7} {'conc':>4} {'load':<6} {'1 core':>9} {'2 cores':>9} "
        f"{'unit':<5} {'2/1':>5} {'p50 ms 1/2':>11} {'p99 ms 1/2':>11} "
        f"{'srv ms/op 1/2':>13} {'srv% 1/2':>9} {'cli% 1/2':>9}",
    ]
    for row in scaling["rows"]:
        rates = row["rates"]
        lines.append(
            f"  {row['name']:<4} {size_label(row['size']):>7} {row['concurrency']:>4} "
            f"{row['driver']:<6} {rates[0]:>9.0f} {rates[1]:>9.0f} {row['unit']:<5} "
            f"{row['ratio']:>5.2f} {_pair(row['p50_ms']):>11} {_pair(row['p99_ms']):>11} "
            f"{_pair(row['server_ms_per_op']):>13} "
            f"{_percent_pair(row['server_busy']):>9} "
            f"{_percent_pair(row['client_busy'], CLIENT_BOUND):>9}  "
            f"{'PASS' if row['met'] else 'MISS'} (goal 2/1 >= 1.7)"
        )
    lines.append(
        "  load: wrk (C, presigned URLs) or python (bench/loadgen.py); cli% is its CPU in %"
        " of one core (! above 80%: it may be the bottleneck)"
    )
    return lines


def render(results: dict) -> str:
    run = results["run"]
    lines = [
        f"S3 benchmark ({'quick' if run['quick'] else 'full'} run, {run['seconds']:.0f} s, "
        "MB = 10^6 bytes)",
        f"  against: {run['against']}",
        f"  cpus {run['cpus']}; {run['pinning']}; load average before/after "
        f"{run['loadavg_before']} / {run['loadavg_after']}",
    ]
    if "verified" in run:
        lines.append(f"  verified (PUT ETag == MD5, GET length and MD5): {run['verified']}")
    if "compared_with" in run:
        lines.append(f"  vs peer: ratio to {run['compared_with']}")
        lines.append(
            "  (compare like with like: fsync on, and both servers pinned alike or unpinned)"
        )
    lines += ["", *_limits_lines(results["limits"])]
    if "reference_get" in results:
        lines += ["", *_reference_lines(results["reference_get"], results["limits"])]
    compared = "compared_with" in run
    for result_set in results.get("result_sets", []):
        lines += ["", *_result_set_lines(result_set, results["limits"], compared)]
    for scaling in results.get("scaling", []):
        lines += ["", *_scaling_lines(scaling)]
    return "\n".join(lines)
