"""The performance issue's goals as PASS/MISS lines (informative only, nothing asserted).

A goal whose numbers this run did not measure (server not watched, no peer to
compare with, a wait too short to tell) is skipped, not failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from report import size_label

MB = 1_000_000
MIB, KIB = 1 << 20, 1 << 10
NOT_WATCHED = "server not watched (--server-pid)"


@dataclass(frozen=True)
class Target:
    text: str
    value: float | None  # None: skipped, see `skipped`
    goal: float
    unit: str
    at_most: bool = False
    skipped: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.goal if self.at_most else self.value >= self.goal


def _phase(phases: list[dict], name: str, size: int, concurrency: int) -> dict | None:
    return next(
        (
            p
            for p in phases
            if (p["name"], p["size"], p["concurrency"]) == (name, size, concurrency)
        ),
        None,
    )


def _floor_target(phases: list[dict], size: int, concurrency: int, in_server: bool) -> Target:
    """Server CPU over the PUT floor, its page-cache write measured in the server
    (`in_server`) or probed around the phase (see workload.FloorProbe)."""
    how = "copy measured in the server" if in_server else "copy probed"
    text = f"PUT {size_label(size)} c{concurrency}: server CPU / floor ({how})"
    phase = _phase(phases, "PUT", size, concurrency)
    if phase is None:
        return Target(text, None, 1.3, "x", True, "not in this run")
    if phase["server_cpu_s_per_gib"] is None:
        return Target(text, None, 1.3, "x", True, NOT_WATCHED)
    floor = phase.get("in_server_floor_cpu_s_per_gib" if in_server else "floor_cpu_s_per_gib")
    if floor is None:
        return Target(text, None, 1.3, "x", True, "no copy counter (not a Granary node)")
    return Target(text, phase["server_cpu_s_per_gib"] / floor, 1.3, "x", True)


def _memory_targets(server: dict) -> list[Target]:
    idle, peak = "idle RSS before the load", "peak RSS up to the 64 MiB c16 PUT"
    settled = "RSS back under 100 MB within 60 s after load"
    if "idle_rss" not in server:
        return [
            Target(text, None, goal, "MB", True, NOT_WATCHED)
            for text, goal in ((idle, 80), (settled, 100), (peak, 300))
        ]
    targets = [Target(idle, server["idle_rss"] / MB, 80, "MB", True)]
    rss = server["rss_at_end_of_wait"] / MB
    if server["rss_settled_after_s"] is None and server["rss_wait_s"] < 60:
        why = f"still {rss:.0f} MB after {server['rss_wait_s']:g} s, the wait of this run"
        targets.append(Target(settled, None, 100, "MB", True, why))
    else:
        targets.append(Target(settled, rss, 100, "MB", True))
    if "peak_rss_16x64mib_put" in server:
        targets.append(Target(peak, server["peak_rss_16x64mib_put"] / MB, 300, "MB", True))
    else:
        targets.append(Target(peak, None, 300, "MB", True, "no 64 MiB c16 PUT in this run"))
    return targets


def _peer_targets(result_set: dict, largest: int) -> list[Target]:
    wanted = [
        ("small_ops", "PUT", 4 * KIB, 16, 2.0),
        ("small_ops", "GET", 4 * KIB, 16, 2.0),
        ("throughput", "PUT", MIB, 16, 1.2),
        ("throughput", "PUT", largest, 1, 1.2),
        ("throughput", "PUT", largest, 16, 1.2),
    ]
    targets = []
    for section, name, size, concurrency, goal in wanted:
        text = f"{name} {size_label(size)} c{concurrency} vs peer"
        phase = _phase(result_set[section], name, size, concurrency)
        if result_set["fsync"] is False:
            why = "fsync off: peers fsync every write, compared with fsync on only"
            targets.append(Target(text, None, goal, "x", skipped=why))
        elif phase is None or phase.get("vs_peer") is None:
            targets.append(Target(text, None, goal, "x", skipped="not in the compared run"))
        else:
            targets.append(Target(text, phase["vs_peer"], goal, "x"))
    return targets


def targets(result_set: dict, limits: dict[str, float], compared: bool) -> list[Target]:
    """The goals for one result set; the peer's only when `compared`."""
    throughput = result_set["throughput"]
    largest = max(phase["size"] for phase in throughput)
    found = [
        _floor_target(throughput, largest, concurrency, in_server)
        for in_server in (True, False)
        for concurrency in (1, 16)
    ]
    for concurrency in (1, 16):
        get = _phase(throughput, "GET", largest, concurrency)
        if get is not None:
            text = f"GET {size_label(largest)} c{concurrency} vs the reference server"
            found.append(Target(text, get.get("vs_reference"), 0.9, "x", skipped="no reference"))
    found += _memory_targets(result_set["server"])
    if compared:
        found += _peer_targets(result_set, largest)
    return found
