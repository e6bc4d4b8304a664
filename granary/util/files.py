"""The node's own files: small files replaced whole (after a crash, the old content or the
new, never a mix), kept private to the server's user, and the free space of their disks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# A filesystem with less free space than this cannot take a metadata commit.
FULL_DISK_RESERVE = 1 << 20
# What the server creates is readable by its user only (folders 0700, files 0600).
PRIVATE_UMASK = 0o077


def write_atomic(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write `data` to a temporary file, sync it, rename it over `path`, sync the folder.

    `private` files are readable by their owner only (keys, tokens).
    """
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make the entries of a folder (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private(root: Path, *, recursive: bool) -> None:
    """Folders 0700 and files 0600 from `root` down (only `root` itself unless `recursive`).

    For data written before the server set its umask: a folder of 0700 is
    enough to hide everything below it, so big block trees need only their root.
    """
    if not root.exists() or root.stat().st_mode & 0o077 == 0:
        return  # private already: what lies below is hidden, as this function leaves it
    root.chmod(0o700)
    if not recursive:
        return
    for folder, folders, files in os.walk(root):
        for names, mode in ((folders, 0o700), (files, 0o600)):
            for name in names:
                path = os.path.join(folder, name)
                if not os.path.islink(path):
                    os.chmod(path, mode)


def write_if_changed(path: Path, data: bytes, *, private: bool = False) -> None:
    """`write_atomic` unless `path` holds `data` already, so an unchanged start writes nothing."""
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    write_atomic(path, data, private=private)


def full_disk(disks: list[tuple[str, Path]]) -> str | None:
    """The name of the first of `disks` (name, folder) whose filesystem is (nearly) full."""
    for name, path in disks:
        try:
            if shutil.disk_usage(path).free < FULL_DISK_RESERVE:
                return name
        except OSError:
            continue
    return None
