"""The process's own resources: open-file limit and the C heap (glibc)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
from pathlib import Path

# When the hard limit is unlimited, the soft one is raised this far (the kernel's
# default fs.nr_open): RLIM_INFINITY itself is refused for RLIMIT_NOFILE.
_OPEN_FILES_CEILING = 1 << 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def tune_malloc() -> None:
    """Stop glibc trimming the heap on every freed read buffer (4-5x upload CPU).

    One arena: buffers allocated on the thread pool otherwise land in
    per-thread arenas, whose free top malloc_trim never gives back (only the
    main arena's is), so a burst of reads kept its memory for good. Python
    allocates under the GIL, so threads seldom contend for the arena.
    """
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return
    mallopt(-3, 16 << 20)  # M_MMAP_THRESHOLD
    mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
    mallopt(-8, 1)  # M_ARENA_MAX


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _OPEN_FILES_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else _OPEN_FILES_CEILING
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def free_heap_bytes() -> int | None:
    """Bytes malloc holds free in its arenas (glibc's mallinfo2), None if unknown."""
    libc = _libc()
    mallinfo2 = getattr(libc, "mallinfo2", None)
    if mallinfo2 is None:
        return None
    mallinfo2.restype = _MallInfo2
    return int(mallinfo2().fordblks)


def trim_heap() -> None:
    """Give the free pages of every malloc arena back to the system (malloc_trim(0)).

    The server sets M_TRIM_THRESHOLD high so that a busy node does not trim on
    every freed buffer; this is the trim it runs once a burst is over.
    """
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


_MADV_DONTNEED = 4


def unmap_file_pages(path: Path) -> int:
    """Drop this process's page-table entries for its mappings of `path`; return
    the bytes of mappings covered.

    A memory-mapped database (LMDB) counts every page it ever read in the
    process's RSS, although those pages belong to the kernel's page cache. For
    a shared file mapping MADV_DONTNEED only unmaps: the data stays in the file
    and the page cache, and the next read maps the page back (a minor fault).
    """
    libc = _libc()
    madvise = getattr(libc, "madvise", None)
    if madvise is None:
        return 0
    target = os.fsencode(os.path.realpath(path))
    covered = 0
    try:
        maps = Path("/proc/self/maps").read_bytes().splitlines()
    except OSError:
        return 0
    for line in maps:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[5] != target or b"s" not in fields[1]:
            continue
        start, end = (int(bound, 16) for bound in fields[0].split(b"-"))
        if madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED) == 0:
            covered += end - start
    return covered
