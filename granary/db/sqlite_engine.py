"""The second metadata engine: SQLite (stdlib sqlite3) in WAL mode.

All trees share one WITHOUT ROWID table keyed by (tree id, key); SQLite
compares BLOBs with memcmp, which is the byte order the interface promises.

One connection writes, serialized by the Db's write lock. Readers borrow a
connection from a pool for the length of one call instead of using one per
thread: a range iterator paused half-way keeps its statement, and so its
snapshot, open, and a point read sharing that connection would see the old
snapshot too.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Final, cast

from granary.db.base import Db, Item, Tree, Tx

FILE_NAME: Final = "metadata.sqlite3"
IDLE_READERS: Final = 8
"""Reader connections kept open for reuse; more are opened on demand."""

_BUSY_TIMEOUT_MS: Final = 10_000
_READER_MMAP_BYTES: Final = 1 << 30

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS trees (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS kv ("
    " tree INTEGER NOT NULL, k BLOB NOT NULL, v BLOB NOT NULL, PRIMARY KEY (tree, k)"
    ") WITHOUT ROWID",
)
_GET = "SELECT v FROM kv WHERE tree = ? AND k = ?"
_PUT = (
    "INSERT INTO kv (tree, k, v) VALUES (?, ?, ?)"
    " ON CONFLICT (tree, k) DO UPDATE SET v = excluded.v"
)
_DELETE = "DELETE FROM kv WHERE tree = ? AND k = ?"
_COUNT = "SELECT count(*) FROM kv WHERE tree = ?"


class SqliteDb(Db):
    """A SQLite database in the directory `path`.

    fsync=True uses synchronous=FULL: the WAL is synced at every commit, so an
    acknowledged write survives a power loss. fsync=False uses
    synchronous=NORMAL: the WAL is synced only at checkpoints, so a power loss
    may undo recent commits, but the database stays consistent.
    """

    def __init__(self, path: Path, *, fsync: bool) -> None:
        super().__init__()
        path.mkdir(parents=True, exist_ok=True)
        self._file = path / FILE_NAME
        self._writer_conn = self._connect()
        self._writer_conn.execute("PRAGMA journal_mode = WAL").fetchall()
        self._writer_conn.execute(f"PRAGMA synchronous = {'FULL' if fsync else 'NORMAL'}")
        for statement in _SCHEMA:
            self._writer_conn.execute(statement)
        self._idle_readers: deque[sqlite3.Connection] = deque()
        self._all_readers: set[sqlite3.Connection] = set()
        self._readers_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False: the writer connection serves whichever thread
        # holds the write lock, and a reader may be closed by close().
        conn = sqlite3.connect(self._file, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        return conn

    def borrow_reader(self) -> sqlite3.Connection:
        try:
            return self._idle_readers.pop()
        except IndexError:
            pass
        conn = self._connect()
        conn.execute("PRAGMA query_only = ON")
        conn.execute(f"PRAGMA mmap_size = {_READER_MMAP_BYTES}").fetchall()
        with self._readers_lock:
            if self._engine_closed:
                conn.close()
                raise RuntimeError("the database is closed")
            self._all_readers.add(conn)
        return conn

    def return_reader(self, conn: sqlite3.Connection) -> None:
        if not self._engine_closed and len(self._idle_readers) < IDLE_READERS:
            self._idle_readers.append(conn)
            return
        with self._readers_lock:
            self._all_readers.discard(conn)
        conn.close()

    def _open_tree(self, name: str) -> Tree:
        conn = self._writer_conn
        conn.execute("INSERT INTO trees (name) VALUES (?) ON CONFLICT DO NOTHING", (name,))
        (tree_id,) = conn.execute("SELECT id FROM trees WHERE name = ?", (name,)).fetchone()
        return SqliteTree(self, name, tree_id)

    def _tree_names(self) -> list[str]:
        conn = self.borrow_reader()
        try:
            return [name for (name,) in conn.execute("SELECT name FROM trees").fetchall()]
        finally:
            self.return_reader(conn)

    def _begin(self) -> Tx:
        self._writer_conn.execute("BEGIN IMMEDIATE")
        return SqliteTx(self, self._writer_conn, nested=False)

    def _begin_nested(self, parent: Tx) -> Tx:
        self._writer_conn.execute("SAVEPOINT nested")
        return SqliteTx(self, self._writer_conn, nested=True)

    def _close_engine(self) -> None:
        with self._readers_lock:
            readers = list(self._all_readers)
            self._all_readers.clear()
        self._idle_readers.clear()
        for conn in readers:
            conn.close()
        self._writer_conn.close()


class SqliteTree(Tree):
    def __init__(self, db: SqliteDb, name: str, tree_id: int) -> None:
        super().__init__(db, name)
        self._sqlite = db
        self.tree_id = tree_id

    def _get(self, key: bytes) -> bytes | None:
        conn = self._sqlite.borrow_reader()
        try:
            # fetchall() runs the statement to its end, releasing the snapshot.
            rows = conn.execute(_GET, (self.tree_id, key)).fetchall()
        finally:
            self._sqlite.return_reader(conn)
        return rows[0][0] if rows else None

    def _range(self, start: bytes | None, end: bytes | None, reverse: bool) -> Iterator[Item]:
        sql, params = range_query(self.tree_id, start, end, reverse, limit=None)
        conn = self._sqlite.borrow_reader()
        try:
            cursor = conn.execute(sql, params)
            try:
                yield from cursor
            finally:
                cursor.close()
        finally:
            self._sqlite.return_reader(conn)

    def _count(self) -> int:
        conn = self._sqlite.borrow_reader()
        try:
            return conn.execute(_COUNT, (self.tree_id,)).fetchall()[0][0]
        finally:
            self._sqlite.return_reader(conn)


class SqliteTx(Tx):
    """A write transaction, or with `nested` a SAVEPOINT inside one."""

    def __init__(self, db: Db, conn: sqlite3.Connection, *, nested: bool) -> None:
        super().__init__(db)
        self._conn = conn
        self._nested = nested

    def _get(self, tree: Tree, key: bytes) -> bytes | None:
        rows = self._conn.execute(_GET, (_tree_id(tree), key)).fetchall()
        return rows[0][0] if rows else None

    def _put(self, tree: Tree, key: bytes, value: bytes | bytearray | memoryview) -> None:
        self._conn.execute(_PUT, (_tree_id(tree), key, value))

    def _delete(self, tree: Tree, key: bytes) -> bool:
        return self._conn.execute(_DELETE, (_tree_id(tree), key)).rowcount > 0

    def _range_chunk(
        self, tree: Tree, start: bytes | None, end: bytes | None, reverse: bool, limit: int
    ) -> list[Item]:
        sql, params = range_query(_tree_id(tree), start, end, reverse, limit)
        return self._conn.execute(sql, params).fetchall()

    def _commit(self) -> None:
        if self._nested:
            self._conn.execute("RELEASE nested")
            return
        try:
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def _abort(self) -> None:
        if self._nested:
            # Fails if SQLite already rolled the whole transaction back (e.g. disk
            # full); the error then fails the batch, which is what happened.
            self._conn.execute("ROLLBACK TO nested")
            self._conn.execute("RELEASE nested")
        elif self._conn.in_transaction:
            self._conn.execute("ROLLBACK")


def range_query(
    tree_id: int, start: bytes | None, end: bytes | None, reverse: bool, limit: int | None
) -> tuple[str, tuple[object, ...]]:
    """The SELECT for [start, end) of one tree, in key order or reversed."""
    sql = "SELECT k, v FROM kv WHERE tree = ?"
    params: list[object] = [tree_id]
    if start is not None:
        sql += " AND k >= ?"
        params.append(start)
    if end is not None:
        sql += " AND k < ?"
        params.append(end)
    sql += " ORDER BY k DESC" if reverse else " ORDER BY k"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return sql, tuple(params)


def _tree_id(tree: Tree) -> int:
    return cast(SqliteTree, tree).tree_id
