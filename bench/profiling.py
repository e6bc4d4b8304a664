"""Optional py-spy profiles of the server, one per phase, summarised by hot spot."""

from __future__ import annotations

import re
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_LINE_NUMBER = re.compile(r":\d+\)$")


@contextmanager
def profiled(
    pid: int | None, output: Path | None, top: int = 8
) -> Iterator[list[tuple[str, float]]]:
    """Record `pid` with py-spy while the block runs (if both `pid` and `output` are
    given); yields a list that is filled, on exit, with the `top` functions by own
    time and their share of samples.

    Only the thread holding the GIL is sampled (`--gil`): with the server pinned
    to one core, waiting threads are often runnable and py-spy would count them
    busy. Work done with the GIL released (hashing, file I/O) does not show."""
    hot_spots: list[tuple[str, float]] = []
    if pid is None or output is None:
        yield hot_spots
        return
    recorder = subprocess.Popen(
        ["py-spy", "record", "--gil", "--pid", str(pid), "--format", "raw", "-o", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield hot_spots
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=60)
    if output.exists():
        hot_spots.extend(top_functions(output, top))


def top_functions(path: Path, top: int) -> list[tuple[str, float]]:
    """Functions by own (leaf) samples in a py-spy raw profile, as shares of all samples."""
    own: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            own[_LINE_NUMBER.sub(")", stack.rsplit(";", 1)[-1])] += int(count)
    total = sum(own.values()) or 1
    return [(name, samples / total) for name, samples in own.most_common(top)]
