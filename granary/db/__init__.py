"""The embedded metadata key-value store: named trees of ordered byte keys.

`open_db` picks the engine: "lmdb" (the default in configuration) or "sqlite".
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from granary.db.base import MAX_KEY_BYTES, MAX_TREES, Db, Tree, Tx
from granary.db.lmdb_engine import LmdbDb
from granary.db.sqlite_engine import SqliteDb

ENGINES: Final = ("lmdb", "sqlite")

__all__ = ["ENGINES", "MAX_KEY_BYTES", "MAX_TREES", "Db", "Tree", "Tx", "open_db"]


def open_db(engine: str, path: Path, *, fsync: bool, map_size: int = 1 << 40) -> Db:
    """Open (creating if needed) the metadata database stored in the directory `path`.

    `map_size` is LMDB's maximum database size (address space only, nothing
    is allocated up front); SQLite grows without a limit and ignores it.
    """
    if engine == "lmdb":
        return LmdbDb(path, fsync=fsync, map_size=map_size)
    if engine == "sqlite":
        return SqliteDb(path, fsync=fsync)
    raise ValueError(f"unknown metadata engine {engine!r}: expected one of {', '.join(ENGINES)}")
