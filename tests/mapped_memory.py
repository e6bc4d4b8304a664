"""How much of a file a process has mapped and resident (/proc/PID/smaps): what the
server's idle trim gives back, seen from outside."""

from __future__ import annotations

from pathlib import Path


def mapped_rss(pid: int | str, path_suffix: str) -> int:
    """Resident bytes of `pid`'s mappings of files whose path ends with `path_suffix`."""
    total, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):
            inside = len(fields) >= 6 and fields[5].endswith(path_suffix)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1]) * 1024
    return total
