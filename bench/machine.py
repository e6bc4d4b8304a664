"""This machine's own limits, measured in the same run as the benchmark.

Speeds are in MB/s (10^6 bytes per second), the best of a few rounds:
best-of filters out the moments another process took the core. Write costs
are in CPU seconds per GiB, from the writing thread's own clock.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import zstandard

MB = 1_000_000
MIB = 1 << 20
GIB = 1 << 30
HASH_BYTES = 64 * MIB
CHUNK = MIB
WRITE_PROBE_BYTES = 64 * MIB
FLOOR_HASHES = ("md5", "blake3", "zstd")


def best_rate(nbytes: int, action: Callable[[], object], rounds: int = 3) -> float:
    """MB/s of the fastest of `rounds` runs of `action` over `nbytes`."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return nbytes / best / MB


def hash_speeds(data: bytes) -> dict[str, float]:
    """Single-core MB/s of MD5 (the ETag), SHA-256 (signed payloads), BLAKE3 (block ids)."""
    return {
        "md5": best_rate(len(data), lambda: hashlib.md5(data).digest()),
        "sha256": best_rate(len(data), lambda: hashlib.sha256(data).digest()),
        "blake3": best_rate(len(data), lambda: blake3.blake3(data).digest()),
    }


def zstd_speed(data: bytes) -> float:
    """Single-core MB/s of zstd level 1 (with checksum, as Granary's blocks) over
    incompressible 1 MiB blocks: the work a block costs before it is found not to shrink."""
    compressor = zstandard.ZstdCompressor(level=1, write_checksum=True)
    blocks = [data[start : start + CHUNK] for start in range(0, len(data), CHUNK)]
    return best_rate(len(data), lambda: [compressor.compress(block) for block in blocks])


def _write_file(path: Path, chunk: bytes, count: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for _ in range(count):
            os.write(fd, chunk)
    finally:
        os.close(fd)


def _write_cost(paths: list[Path], total: int) -> float:
    """CPU-s/GiB of writing `total` bytes spread evenly over new files at `paths`
    (their missing folders created on the way), without fsync."""
    chunk = os.urandom(CHUNK)
    per_file = total // CHUNK // len(paths)
    start = time.thread_time()
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_file(path, chunk, per_file)
    return (time.thread_time() - start) / (total / GIB)


def page_cache_write_cost(folder: Path, total: int = WRITE_PROBE_BYTES) -> float:
    """CPU-s/GiB of writing `total` bytes into a new file (then deleted): the one copy
    into the page cache a PUT cannot avoid. On a VM a fresh page costs a host fault,
    a page freed moments ago much less (see `kept_page_cache_write_cost`)."""
    path = folder / f"page-cache-probe-{secrets.token_hex(4)}.bin"
    try:
        return _write_cost([path], total)
    finally:
        path.unlink(missing_ok=True)


def kept_page_cache_write_cost(path: Path, total: int = WRITE_PROBE_BYTES) -> float:
    """`page_cache_write_cost` into a new file at `path` that the caller deletes later:
    probes taken around a phase keep their files until it ends, so that the server
    is not handed their just-freed (cheaper) pages."""
    return _write_cost([path], total)


def write_costs(folder: Path, total: int = WRITE_PROBE_BYTES) -> dict[str, float]:
    """CPU-s/GiB of writes without fsync. `page_cache_write_cpu`: one new file, as
    probed before each PUT phase. Then, right after 2 x `total` of page cache is
    freed, so that both get pages the guest has just freed (cheap, and alike),
    `freed_page_write_cpu`: one new file again, and `fanout_write_cpu`: the same
    bytes as 1 MiB files each in the new `ab/cd/` folder pair its random name falls
    in. The last two differ by what one file per block costs on this filesystem."""
    costs = {"page_cache_write_cpu": page_cache_write_cost(folder, total)}
    base = folder / "write-probe"
    names = [secrets.token_hex(16) for _ in range(total // CHUNK)]
    try:
        _write_cost([base / "freed"], 2 * total)
        (base / "freed").unlink()
        costs["freed_page_write_cpu"] = _write_cost([base / "one-file"], total)
        costs["fanout_write_cpu"] = _write_cost([base / n[:2] / n[2:4] / n for n in names], total)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return costs


def hashing_floor(limits: dict[str, float]) -> float:
    """CPU-s/GiB of the hashing a PUT cannot avoid here: MD5 (the ETag), BLAKE3 (block
    ids) and zstd on incompressible data. No SHA-256: the load generator sends
    UNSIGNED-PAYLOAD, so the server hashes no payload for the signature."""
    return sum(GIB / (limits[name] * MB) for name in FLOOR_HASHES)


def get_limit(limits: dict[str, float]) -> float:
    """What bounds a GET here: the wire, or reading blocks (from the page cache)."""
    return min(limits["loopback_tcp"], limits["disk_read_cached"])


def _send_all(sock: socket.socket, total: int) -> None:
    chunk = memoryview(bytes(CHUNK))
    sent = 0
    with sock:
        while sent < total:
            size = min(CHUNK, total - sent)
            sock.sendall(chunk[:size])
            sent += size


def _receive_all(sock: socket.socket, total: int) -> None:
    buffer = bytearray(CHUNK)
    received = 0
    while received < total:
        count = sock.recv_into(buffer)
        if count == 0:
            raise ConnectionError("loopback sender closed early")
        received += count


def loopback_speed(total: int) -> float:
    """MB/s of one TCP connection on 127.0.0.1, sender and receiver in two threads."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sender = socket.create_connection(listener.getsockname())
        receiver, _ = listener.accept()
    with receiver:
        thread = threading.Thread(target=_send_all, args=(sender, total))
        start = time.perf_counter()
        thread.start()
        _receive_all(receiver, total)
        elapsed = time.perf_counter() - start
        thread.join()
    return total / elapsed / MB


def _write_synced(path: Path, total: int) -> float:
    chunk = os.urandom(CHUNK)
    start = time.perf_counter()
    with open(path, "wb") as handle:
        for _ in range(total // CHUNK):
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    return total / (time.perf_counter() - start) / MB


def _read(path: Path) -> float:
    buffer = bytearray(CHUNK)
    total = 0
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            total += count
    return total / (time.perf_counter() - start) / MB


def _evict(path: Path) -> None:
    """Drop this file's clean pages from the page cache (no root needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def disk_speeds(folder: Path, total: int) -> dict[str, float]:
    """Sequential write+fsync, cold read (file evicted) and page-cache read, in `folder`."""
    path = folder / "disk-probe.bin"
    try:
        write = _write_synced(path, total)
        _evict(path)
        cold = _read(path)
        cached = max(_read(path) for _ in range(2))
    finally:
        path.unlink(missing_ok=True)
    return {"disk_write_fsync": write, "disk_read_cold": cold, "disk_read_cached": cached}


def measure(folder: Path, loopback_bytes: int, disk_bytes: int) -> dict[str, float]:
    """All machine limits: speeds in MB/s, write costs (`*_cpu`) in CPU-s/GiB.

    The write costs come first, before the other probes free memory that the
    page cache would then reuse cheaply."""
    costs = write_costs(folder)
    data = os.urandom(HASH_BYTES)
    limits = hash_speeds(data)
    limits["zstd"] = zstd_speed(data)
    limits["loopback_tcp"] = max(loopback_speed(loopback_bytes) for _ in range(2))
    limits.update(disk_speeds(folder, disk_bytes))
    return limits | costs
