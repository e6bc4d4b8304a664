"""The default metadata engine: LMDB through py-lmdb.

Every tree is an LMDB named database. Reads open a read-only transaction per
call (py-lmdb reuses a spare one, so this is cheap), which sees the last
commit and never waits for the writer.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Final, cast

import lmdb

from granary.db.base import MAX_KEY_BYTES, MAX_TREES, Db, Item, Tree, Tx
from granary.util.resources import unmap_file_pages

MAX_READERS: Final = 1024
"""Read transactions open at once, across processes (each live range iterator holds one)."""


class LmdbDb(Db):
    """An LMDB environment in the directory `path`.

    fsync=True commits with `sync=True, metasync=True`: the data and the meta
    page that points at the new root are both synced before a commit returns,
    so an acknowledged write survives a power loss (group commit shares those
    syncs among every write of a batch).

    fsync=False commits with `sync=False`: nothing is synced, the kernel
    writes pages back when it likes. A crash of the process still loses
    nothing, but a power loss or kernel crash may lose recent commits and,
    per LMDB's documentation, may corrupt the file if the filesystem reorders
    writes.
    """

    def __init__(self, path: Path, *, fsync: bool, map_size: int) -> None:
        super().__init__()
        path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(
            str(path),
            map_size=map_size,
            subdir=True,
            readahead=False,
            max_dbs=MAX_TREES,
            max_readers=MAX_READERS,
            sync=fsync,
            metasync=fsync,
            lock=True,
        )
        self._env.reader_check()  # free slots left by crashed processes
        self._file = path / "data.mdb"

    def _open_tree(self, name: str) -> Tree:
        return LmdbTree(self, name, self._env, self._env.open_db(name.encode()))

    def _tree_names(self) -> list[str]:
        with self._env.begin() as txn:
            return [key.decode() for key in txn.cursor().iternext(values=False)]

    def _begin(self) -> Tx:
        return LmdbTx(self, self._env.begin(write=True))

    def _begin_nested(self, parent: Tx) -> Tx:
        parent_txn = cast(LmdbTx, parent).txn
        return LmdbTx(self, self._env.begin(write=True, parent=parent_txn))

    def release_memory(self) -> None:
        """Unmap the pages of the database file read so far (they stay in the page cache)."""
        unmap_file_pages(self._file)

    def forget_dead_readers(self) -> None:
        """A dead process's reader slot would pin old pages and keep them from reuse."""
        self._env.reader_check()

    def _close_engine(self) -> None:
        self._env.close()


class LmdbTree(Tree):
    def __init__(self, db: Db, name: str, env: lmdb.Environment, dbi: lmdb._Database) -> None:
        super().__init__(db, name)
        self._env = env
        self.dbi = dbi

    def _get(self, key: bytes) -> bytes | None:
        with self._env.begin(db=self.dbi) as txn:
            return txn.get(key)

    def _range(self, start: bytes | None, end: bytes | None, reverse: bool) -> Iterator[Item]:
        with self._env.begin(db=self.dbi) as txn:
            yield from _scan(txn.cursor(), start, end, reverse)

    def _count(self) -> int:
        with self._env.begin() as txn:
            return txn.stat(self.dbi)["entries"]


class LmdbTx(Tx):
    def __init__(self, db: Db, txn: lmdb.Transaction[bytes]) -> None:
        super().__init__(db)
        self.txn = txn

    def _get(self, tree: Tree, key: bytes) -> bytes | None:
        return self.txn.get(key, db=cast(LmdbTree, tree).dbi)

    def _put(self, tree: Tree, key: bytes, value: bytes | bytearray | memoryview) -> None:
        self.txn.put(key, value, db=cast(LmdbTree, tree).dbi)

    def _delete(self, tree: Tree, key: bytes) -> bool:
        return self.txn.delete(key, db=cast(LmdbTree, tree).dbi)

    def _range_chunk(
        self, tree: Tree, start: bytes | None, end: bytes | None, reverse: bool, limit: int
    ) -> list[Item]:
        with self.txn.cursor(db=cast(LmdbTree, tree).dbi) as cursor:
            return list(islice(_scan(cursor, start, end, reverse), limit))

    def _commit(self) -> None:
        self.txn.commit()

    def _abort(self) -> None:
        self.txn.abort()


def _scan(
    cursor: lmdb.Cursor[bytes], start: bytes | None, end: bytes | None, reverse: bool
) -> Iterator[Item]:
    """Walk [start, end) with an LMDB cursor.

    LMDB cannot seek to a bound longer than MAX_KEY_BYTES, so the cursor seeks
    to the bound's prefix and the loop steps past keys still outside the range.
    """
    if reverse:
        found = cursor.set_range(end[:MAX_KEY_BYTES]) if end is not None else False
        if not found:
            found = cursor.last()
        while found and end is not None and cursor.key() >= end:
            found = cursor.prev()
        if not found:
            return
        for key, value in cursor.iterprev():
            if start is not None and key < start:
                return
            yield key, value
    else:
        found = cursor.set_range(start[:MAX_KEY_BYTES]) if start is not None else cursor.first()
        while found and start is not None and cursor.key() < start:
            found = cursor.next()
        if not found:
            return
        for key, value in cursor.iternext():
            if end is not None and key >= end:
                return
            yield key, value
