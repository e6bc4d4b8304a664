"""This machine's own limits, measured in the same run as the benchmark.

Every figure is in MB/s (10^6 bytes per second), the best of a few rounds:
best-of filters out the moments another process took the core.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import blake3

MB = 1_000_000
MIB = 1 << 20
HASH_BYTES = 64 * MIB
CHUNK = MIB


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
    """All machine limits, in MB/s."""
    limits = hash_speeds(os.urandom(HASH_BYTES))
    limits["loopback_tcp"] = max(loopback_speed(loopback_bytes) for _ in range(2))
    limits.update(disk_speeds(folder, disk_bytes))
    return limits
