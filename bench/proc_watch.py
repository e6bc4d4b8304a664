"""CPU time and memory of a server's processes, read from /proc.

A Granary node is one process; Ceph RGW or Swift run several (proxy, object,
container, account servers...): their figures are summed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ProcessWatch:
    """Watches a fixed set of pids: utime+stime, VmRSS, VmHWM and Pss, summed over them."""

    def __init__(self, pids: Sequence[int]) -> None:
        if not pids:
            raise ValueError("a ProcessWatch needs at least one pid")
        self.pids = tuple(pids)

    @property
    def pid(self) -> int:
        """The first pid (the one py-spy records)."""
        return self.pids[0]

    def cpu_seconds(self) -> float:
        """utime + stime of every watched process, all their threads."""
        return sum(_cpu_seconds(pid) for pid in self.pids)

    def memory(self) -> dict[str, int]:
        """VmRSS, VmHWM (peak RSS) and Pss, in bytes. Over several processes VmHWM is
        the sum of their own peaks (an upper bound of their peak together), and RSS
        counts their shared pages once per process; Pss shares them out."""
        totals = {"VmRSS": 0, "VmHWM": 0, "Pss": 0}
        for pid in self.pids:
            for path in (f"/proc/{pid}/status", f"/proc/{pid}/smaps_rollup"):
                for line in Path(path).read_text().splitlines():
                    name, _, rest = line.partition(":")
                    if name in totals:
                        totals[name] += int(rest.split()[0]) * 1024
        return totals


def children_of(pid: int) -> list[int]:
    """The processes `pid`'s main thread started (a node's S3 workers)."""
    return sorted(int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def _cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
