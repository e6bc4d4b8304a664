"""Block files on this node's data directories.

A block lives at ``DIR/ab/cd/<hex id>`` (``.zst`` appended when stored
compressed). Writes go to a temporary file in the same directory and are
renamed into place, so a reader never sees half a block; with `fsync` the file
and its directory are synced before the write is acknowledged. All methods
block and are meant to run on a worker thread.

With several data directories, a block's primary directory is chosen from
its id, weighted by the writable directories' capacities; new blocks go
there, reads look in every directory, and `relocate` (repair rebalance)
moves a block found elsewhere, which also drains read-only directories.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from granary.block import metrics
from granary.block.codec import CorruptBlock, decode_block, maybe_compress, verify_mapped
from granary.util.file_region import FileRegion, OpenFile
from granary.util.files import fsync_dir

MARKER_FILE = "granary-marker"
QUARANTINE_SUFFIX = ".corrupted"
_HEX_DIGITS = frozenset("0123456789abcdef")
_TEMP_NAMES = itertools.count()
"""Temporary block files are named `.<id>.tmp-<pid>-<n>`: unique among live writers."""


@dataclass(frozen=True)
class DataDirectory:
    path: Path
    capacity: int
    read_only: bool = False


class BlockStore:
    def __init__(
        self, directories: list[DataDirectory], *, fsync: bool, compression_level: int | None
    ) -> None:
        if not any(not d.read_only for d in directories):
            raise ValueError("at least one data directory must be writable")
        self.directories = directories
        self.fsync = fsync
        self.compression_level = compression_level
        self._writable = [d for d in directories if not d.read_only]
        self._weights = _cumulative([d.capacity for d in self._writable])
        self.fresh = [d for d in directories if _check_marker(d)]
        """The directories found empty and given a new marker (a new or wiped disk)."""
        self._folders_made = {d: bytearray(1 << 13) for d in self._writable}
        """Per writable directory, a bit per `ab/cd` folder known to exist (8 KiB):
        a block write then costs no stat or mkdir of its folders."""

    def _primary(self, block_id: bytes) -> DataDirectory:
        """The directory a new block goes to, spread by capacity."""
        point = int.from_bytes(block_id[:8], "big") % self._weights[-1]
        for directory, bound in zip(self._writable, self._weights, strict=True):
            if point < bound:
                return directory
        return self._writable[-1]

    @staticmethod
    def _paths(directory: DataDirectory, block_id: bytes) -> tuple[Path, Path]:
        hexid = block_id.hex()
        folder = Path(_folder(directory, hexid))
        return folder / hexid, folder / (hexid + ".zst")

    def find(self, block_id: bytes) -> tuple[Path, bool] | None:
        """Where a block is stored, and whether compressed."""
        for directory in self.directories:
            plain, packed = self._paths(directory, block_id)
            if packed.exists():
                return packed, True
            if plain.exists():
                return plain, False
        return None

    def contains(self, block_id: bytes) -> bool:
        hexid = block_id.hex()
        exists = os.path.exists
        for directory in self.directories:
            plain = f"{_folder(directory, hexid)}/{hexid}"
            if exists(plain) or exists(plain + ".zst"):
                return True
        return False

    def write(self, block_id: bytes, data: bytes | bytearray) -> int:
        """Store a block unless already present; return the bytes written.

        This runs once per block of every upload, so it uses plain string
        paths and `os` calls, and a temporary name from a counter.
        """
        if self.contains(block_id):
            return 0
        started = time.perf_counter()
        stored, compressed = maybe_compress(data, self.compression_level)
        directory = self._primary(block_id)
        hexid = block_id.hex()
        folder = _folder(directory, hexid)
        target = f"{folder}/{hexid}.zst" if compressed else f"{folder}/{hexid}"
        temp = f"{folder}/.{hexid}.tmp-{os.getpid()}-{next(_TEMP_NAMES)}"
        fd = self._create_in_folder(directory, hexid, temp)
        try:
            try:
                copy_started = time.thread_time()
                view = memoryview(stored)
                while view:
                    view = view[os.write(fd, view) :]
                metrics.WRITE_COPY_CPU.inc(time.thread_time() - copy_started)
                if self.fsync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        if self.fsync:
            fsync_dir(Path(folder))
        metrics.WRITE_DURATION.observe(time.perf_counter() - started)
        metrics.BYTES_WRITTEN.inc(len(stored))
        return len(stored)

    def _create_in_folder(self, directory: DataDirectory, hexid: str, path: str) -> int:
        """Create (truncate) the file `path` in the block's `ab/cd` folder, making
        the folders first unless known to exist; return its descriptor."""
        made = self._folders_made[directory]
        index = int(hexid[:4], 16)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        if made[index >> 3] & (1 << (index & 7)):
            try:
                return os.open(path, flags, 0o644)
            except FileNotFoundError:  # the folders were removed behind our back
                self._folders_made[directory] = made = bytearray(len(made))
        self._make_dirs(directory.path, Path(_folder(directory, hexid)))
        # Threads may race on this byte: a lost bit only costs one more is_dir().
        made[index >> 3] |= 1 << (index & 7)
        return os.open(path, flags, 0o644)

    def _make_dirs(self, root: Path, folder: Path) -> None:
        """Create the block's folders; with fsync, make their entries durable too."""
        if folder.is_dir():
            return
        created = []
        for level in (folder.parent, folder):
            if not level.is_dir():
                level.mkdir(exist_ok=True)
                created.append(level)
        if self.fsync:
            for level in created:
                fsync_dir(level.parent)

    def read(self, block_id: bytes) -> bytes | None:
        """The verified plain content of a block, or None if absent.

        A copy that fails verification is renamed ``*.corrupted`` and
        `CorruptBlock` is raised.
        """
        started = time.perf_counter()
        found = self.find(block_id)
        if found is None:
            return None
        path, compressed = found
        return self._read_decoded(path, compressed, block_id, started)

    def _read_decoded(
        self, path: Path, compressed: bool, block_id: bytes, started: float
    ) -> bytes | None:
        """The verified plain content of the copy at `path` (None: gone meanwhile)."""
        try:
            stored = path.read_bytes()
        except FileNotFoundError:
            return None
        metrics.BYTES_READ.inc(len(stored))
        with self._quarantined_if_corrupt(path):
            data = decode_block(stored, compressed, block_id)
        metrics.READ_DURATION.observe(time.perf_counter() - started)
        return data

    def read_for_sending(self, block_id: bytes) -> bytes | FileRegion | None:
        """Like `read`, but a block stored plain comes as a region of its open file.

        Its pages are verified through a read-only mapping (hashed where they
        lie in the page cache, never copied into the process), and a response
        then sends them from the file (`sendfile`). A compressed block is
        decoded as by `read`.
        """
        started = time.perf_counter()
        hexid = block_id.hex()
        for directory in self.directories:
            path = f"{_folder(directory, hexid)}/{hexid}"
            try:
                file = OpenFile(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
            except FileNotFoundError:
                if os.path.exists(path + ".zst"):
                    return self._read_decoded(Path(path + ".zst"), True, block_id, started)
                continue
            size = os.fstat(file.fd).st_size
            metrics.BYTES_READ.inc(size)
            with self._quarantined_if_corrupt(Path(path)):
                verify_mapped(file.fd, size, block_id)
            metrics.READ_DURATION.observe(time.perf_counter() - started)
            return FileRegion(file, 0, size)
        return None

    @staticmethod
    @contextlib.contextmanager
    def _quarantined_if_corrupt(path: Path) -> Iterator[None]:
        """Rename the copy at `path` aside when the body raises `CorruptBlock`."""
        try:
            yield
        except CorruptBlock:
            metrics.CORRUPT.inc()
            # Quarantined, not deleted: an operator may still want to look at it.
            # FileNotFoundError: another reader quarantined it first.
            with contextlib.suppress(FileNotFoundError):
                path.rename(path.with_name(path.name + QUARANTINE_SUFFIX))
            raise

    def delete(self, block_id: bytes) -> bool:
        removed = False
        for directory in self.directories:
            for path in self._paths(directory, block_id):
                try:
                    path.unlink()
                    removed = True
                except FileNotFoundError:
                    pass
        if removed:
            metrics.DELETED.inc()
        return removed

    def locations(self, block_id: bytes) -> list[tuple[Path, int]]:
        """Every file of a block (quarantined copies included), with its size."""
        found = []
        for directory in self.directories:
            for path in self._paths(directory, block_id):
                for candidate in (path, path.with_name(path.name + QUARANTINE_SUFFIX)):
                    with contextlib.suppress(FileNotFoundError):
                        found.append((candidate, candidate.stat().st_size))
        return found

    def blocks_after(self, after: bytes | None, limit: int) -> list[bytes]:
        """Up to `limit` ids of stored blocks greater than `after`, in id order."""
        start = after.hex() if after is not None else ""
        found: list[bytes] = []
        for top in self._subdirs(()):
            if top < start[:2]:
                continue
            for sub in self._subdirs((top,)):
                if top == start[:2] and sub < start[2:4]:
                    continue
                names = sorted(self._block_names((top, sub)))
                found.extend(bytes.fromhex(n) for n in names if n > start)
                if len(found) >= limit:
                    return found[:limit]
        return found

    def _subdirs(self, parts: tuple[str, ...]) -> list[str]:
        """The two-hex-digit folder names at `parts` in any directory, sorted."""
        names: set[str] = set()
        for directory in self.directories:
            try:
                with os.scandir(directory.path.joinpath(*parts)) as entries:
                    names.update(e.name for e in entries if _is_hex(e.name, 2) and e.is_dir())
            except FileNotFoundError:
                pass
        return sorted(names)

    def _block_names(self, parts: tuple[str, ...]) -> set[str]:
        names: set[str] = set()
        for directory in self.directories:
            try:
                with os.scandir(directory.path.joinpath(*parts)) as entries:
                    for entry in entries:
                        name = entry.name.removesuffix(".zst")
                        if _is_hex(name, 64):
                            names.add(name)
            except FileNotFoundError:
                pass
        return names

    def sweep_temp_files(self, *, before: float, pid: int | None = None) -> int:
        """Remove the temporary files a crashed writer left (all of them, or those
        of process `pid`), last written before `before` (a Unix time: files of a
        live writer are newer); return how many. Reads every block folder."""
        marker = ".tmp-" if pid is None else f".tmp-{pid}-"
        removed = 0
        for top in self._subdirs(()):
            for sub in self._subdirs((top,)):
                for directory in self.directories:
                    removed += _remove_temp_files(directory.path / top / sub, marker, before)
        return removed

    def relocate(self, block_id: bytes) -> bool:
        """Move a block into its primary directory; return whether a file moved.

        The copy in the primary directory is complete (renamed into place)
        before any other copy is removed.
        """
        primary = self._primary(block_id)
        kept = None
        for path in self._paths(primary, block_id):
            if path.exists():
                kept = path
        moved = False
        for directory in self.directories:
            if directory is primary:
                continue
            for path in self._paths(directory, block_id):
                if not path.exists():
                    continue
                if kept is None:
                    kept = self._move_into(primary, path)
                    moved = True
                else:
                    path.unlink(missing_ok=True)
        return moved

    def _move_into(self, directory: DataDirectory, source: Path) -> Path:
        target = directory.path / source.parent.parent.name / source.parent.name / source.name
        self._make_dirs(directory.path, target.parent)
        try:
            os.rename(source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            temp = target.with_name(f".{target.name}.tmp-{secrets.token_hex(6)}")
            try:
                shutil.copyfile(source, temp)
                if self.fsync:
                    _fsync_file(temp)
                os.replace(temp, target)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            source.unlink()
        if self.fsync:
            fsync_dir(target.parent)
        return target


def _folder(directory: DataDirectory, hexid: str) -> str:
    """The `ab/cd` folder of a block in a data directory."""
    return f"{directory.path}/{hexid[:2]}/{hexid[2:4]}"


def _remove_temp_files(folder: Path, marker: str, before: float) -> int:
    try:
        with os.scandir(folder) as entries:
            candidates = [e for e in entries if e.name.startswith(".") and marker in e.name]
    except FileNotFoundError:
        return 0
    removed = 0
    for entry in candidates:
        with contextlib.suppress(FileNotFoundError):  # renamed into place meanwhile
            if entry.stat(follow_symlinks=False).st_mtime < before:
                os.unlink(entry.path)
                removed += 1
    return removed


def _is_hex(name: str, length: int) -> bool:
    return len(name) == length and _HEX_DIGITS.issuperset(name)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fdatasync(handle.fileno())


def _cumulative(values: list[int]) -> list[int]:
    total, bounds = 0, []
    for value in values:
        total += max(value, 1)
        bounds.append(total)
    return bounds


def _check_marker(directory: DataDirectory) -> bool:
    """Create the marker in an empty directory; refuse a non-empty one without it.

    A data directory whose disk failed to mount shows up foreign; serving
    from it would make every block look lost. An empty one is taken as a new
    (or replaced) disk: it gets a marker, and True is returned so that the
    node can fetch back the blocks it should hold.
    """
    directory.path.mkdir(parents=True, exist_ok=True)
    marker = directory.path / MARKER_FILE
    if marker.exists():
        return False
    if any(directory.path.iterdir()):
        raise RuntimeError(
            f"data directory {directory.path} is not empty and has no {MARKER_FILE}: "
            "is the right disk mounted?"
        )
    marker.write_text("This directory holds Granary data blocks.\n")
    return True
