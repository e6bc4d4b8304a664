"""Keyed locks that exclude tasks of this process and of the node's other processes.

A node may run several processes on one metadata and data folder (see
docs/process-model.md). What one process serialized with a `KeyedLocks`
must then be serialized across processes too: a GC deletion against a new
write of the same block, say. A key hashes to one of `stripes` byte ranges
of a lock file; holding the key means holding an in-process lock for its
stripe, then a Linux open-file-description lock (F_OFD_SETLK) on that byte.

- OFD locks belong to the open file, not to the process: two tasks of one
  process would share the byte lock, hence the in-process lock first.
- The kernel drops a dead process's OFD locks: a crash never leaves a key
  held.
- Waiting polls a non-blocking F_OFD_SETLK with a short, growing sleep, so
  the event loop never blocks and a cancelled wait leaves nothing behind.
  Contention across processes is rare (the same block, the same upload).
- Two keys may share a stripe, so a task must never hold two keys of one
  lock set at once (it could wait for itself).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import os
import struct
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from pathlib import Path

from granary.util.locks import KeyedLocks

# struct flock on 64-bit Linux: l_type, l_whence (short), l_start, l_len (off_t), l_pid (pid_t),
# padded to the struct's 8-byte alignment.
_FLOCK = struct.Struct("hhqqi4x")
DEFAULT_STRIPES = 4096
_FIRST_WAIT_SECS = 0.0005
_LONGEST_WAIT_SECS = 0.02


def _flock(lock_type: int, offset: int) -> bytes:
    return _FLOCK.pack(lock_type, os.SEEK_SET, offset, 1, 0)


def _open_lock_file(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _try_lock_byte(fd: int, offset: int) -> bool:
    """Lock byte `offset` for this open file; False when another one holds it."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_WRLCK, offset))
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _byte_held_elsewhere(fd: int, offset: int) -> bool:
    probe = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock(fcntl.F_WRLCK, offset))
    return _FLOCK.unpack(probe)[0] != fcntl.F_UNLCK


class SharedKeyedLocks:
    """`KeyedLocks` that also exclude the other processes opening the same `path`."""

    def __init__(self, path: Path, stripes: int = DEFAULT_STRIPES) -> None:
        self.path = path
        self.stripes = stripes
        self._fd = _open_lock_file(path)
        self._local = KeyedLocks()

    def stripe_of(self, key: Hashable) -> int:
        raw = key if isinstance(key, bytes) else repr(key).encode()
        return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest()) % self.stripes

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        stripe = self.stripe_of(key)
        async with self._local.hold(stripe):
            await self._lock_byte(stripe)
            try:
                yield
            finally:
                fcntl.fcntl(self._fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_UNLCK, stripe))

    async def _lock_byte(self, stripe: int) -> None:
        wait = _FIRST_WAIT_SECS
        while not _try_lock_byte(self._fd, stripe):
            await asyncio.sleep(wait)
            wait = min(wait * 2, _LONGEST_WAIT_SECS)

    def held_elsewhere(self, key: Hashable) -> bool:
        """Whether another process holds `key`'s stripe now (for tests and diagnostics)."""
        return _byte_held_elsewhere(self._fd, self.stripe_of(key))

    def close(self) -> None:
        os.close(self._fd)

    def __len__(self) -> int:
        return len(self._local)


KeyLocks = KeyedLocks | SharedKeyedLocks
"""What a component holding keyed locks takes: shared when its node runs several processes."""


def process_local_locks(name: str) -> KeyLocks:
    """Locks for a component built where only one process uses the folders (tests, tools)."""
    return KeyedLocks()


class SharedLockFiles:
    """Hands out the node's shared lock sets, one file per name in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._made: list[SharedKeyedLocks] = []

    def __call__(self, name: str) -> KeyLocks:
        locks = SharedKeyedLocks(self.folder / name)
        self._made.append(locks)
        return locks

    def close(self) -> None:
        for locks in self._made:
            locks.close()


class ProcessSlots:
    """One byte of a file per process slot of a node, locked for the process's life.

    The kernel unlocks a slot when its process dies, whatever killed it, so
    "free" means that no process of that slot runs any more.
    """

    def __init__(self, path: Path) -> None:
        self._fd = _open_lock_file(path)

    def claim(self, slot: int) -> bool:
        """Lock `slot` for this process; False when another process holds it."""
        return _try_lock_byte(self._fd, slot)

    def held_elsewhere(self, slot: int) -> bool:
        return _byte_held_elsewhere(self._fd, slot)

    async def wait_until_free(self, slots: range, poll_secs: float = 0.1) -> None:
        """Return once no other process holds any of `slots`."""
        while any(self.held_elsewhere(slot) for slot in slots):
            await asyncio.sleep(poll_secs)

    def close(self) -> None:
        os.close(self._fd)
