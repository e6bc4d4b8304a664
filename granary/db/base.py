"""The metadata key-value interface every engine implements, and its group-commit writer.

A `Db` holds named `Tree`s of byte keys and byte values kept in byte order.
Reads go straight to the engine from any thread and see committed data only.
Writes happen inside a `Tx`, either synchronously in the calling thread
(`Db.transaction`) or on the Db's single writer thread (`Db.transact`), which
runs every queued function of a batch inside one outer write transaction, each
in its own nested transaction, and commits once. With fsync on, that is one
fsync for the whole batch instead of one per caller.

An engine subclasses `Db`, `Tree` and `Tx` and fills in their underscored hooks;
argument checks, locking and batching live here so that every engine behaves
the same.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

MAX_KEY_BYTES: Final = 511
"""LMDB's key limit, enforced by every engine so that they all accept the same keys."""

MAX_TREES: Final = 128
"""How many trees one Db may open (LMDB needs the number when the file is opened)."""

MAX_BATCH: Final = 256
"""At most this many `transact` calls share one commit."""

TX_RANGE_CHUNK: Final = 256
"""`Tx.range` reads this many rows at a time, so no engine cursor outlives a chunk."""

T = TypeVar("T")
Item = tuple[bytes, bytes]

log = logging.getLogger(__name__)


class Db(ABC):
    """A set of named trees with serialized writes.

    `commit_count` counts the write transactions committed since opening; tests
    use it to see group commit at work.
    """

    def __init__(self) -> None:
        self.commit_count = 0
        self._trees: dict[str, Tree] = {}
        self._write_lock = threading.Lock()
        self._write_owner: int | None = None
        self._state_lock = threading.Lock()
        self._closed = False
        self._engine_closed = False
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None

    def tree(self, name: str) -> Tree:
        """Open the tree called `name`, creating it if it does not exist yet.

        Opening a new tree takes the write lock: open trees at startup, not
        inside a write function (that raises RuntimeError).
        """
        tree = self._trees.get(name)
        if tree is not None:
            return tree
        if not isinstance(name, str) or not name:
            raise ValueError(f"a tree name is a non-empty string, not {name!r}")
        self._check_open()
        with self._writing():
            tree = self._trees.get(name)
            if tree is None:
                if len(self._trees) >= MAX_TREES:
                    raise ValueError(f"cannot open more than {MAX_TREES} trees")
                tree = self._open_tree(name)
                self._trees[name] = tree
        return tree

    def tree_names(self) -> list[str]:
        """The names of every tree stored in the database, sorted."""
        self._check_open()
        return sorted(self._tree_names())

    def transaction(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` in a write transaction in the calling thread and commit it.

        If `fn` raises, its changes are rolled back and the exception propagates.
        Blocks while another write (for example a `transact` batch) is running.
        Must not be called from inside another write transaction.
        """
        self._check_open()
        with self._writing():
            tx = self._begin()
            try:
                result = fn(tx)
            except BaseException:
                tx.abort()
                raise
            tx.commit()
            self.commit_count += 1
        _run_callbacks(tx.callbacks)
        return result

    async def transact(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` on the writer thread, sharing one commit with concurrent callers.

        `fn` runs in its own nested transaction: if it raises, only its changes
        are rolled back and the exception is raised here. Its `on_commit`
        callbacks run on this event loop once the batch is committed. Cancelling
        the caller does not cancel the write.
        """
        loop = asyncio.get_running_loop()
        request = _Request(fn, loop, loop.create_future())
        with self._state_lock:
            self._check_open()
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_batches, name="granary-db-writer", daemon=True
                )
                self._writer.start()
            self._requests.put(request)
        return await request.future

    def release_memory(self) -> None:  # noqa: B027 - most engines hold nothing to give back
        """Give back memory the engine holds for speed only (called when idle)."""

    def forget_dead_readers(self) -> None:  # noqa: B027 - engines without reader slots
        """Free what processes that died left registered in the engine (reader slots)."""

    def close(self) -> None:
        """Finish the queued writes, stop the writer thread and close the engine."""
        if self._write_owner == threading.get_ident():
            raise RuntimeError("cannot close the database inside a write transaction")
        with self._state_lock:
            already_closed = self._closed
            self._closed = True
            writer = self._writer
        if writer is not None:
            if not already_closed:
                self._requests.put(None)
            writer.join()
        with self._write_lock:
            if not self._engine_closed:
                self._engine_closed = True
                self._close_engine()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the database is closed")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the single-writer lock; a thread already holding it would deadlock."""
        me = threading.get_ident()
        if self._write_owner == me:
            raise RuntimeError("a write transaction is already open in this thread")
        with self._write_lock:
            if self._engine_closed:
                raise RuntimeError("the database is closed")
            self._write_owner = me
            try:
                yield
            finally:
                self._write_owner = None

    def _write_batches(self) -> None:
        """The writer thread: take what is queued, up to MAX_BATCH, and commit it together."""
        stopping = False
        while not stopping:
            first = self._requests.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    request = self._requests.get_nowait()
                except queue.Empty:
                    break
                if request is None:
                    stopping = True
                    break
                batch.append(request)
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Request]) -> None:
        outcomes: list[_Outcome] = []
        try:
            with self._writing():
                outer = self._begin()
                try:
                    for request in batch:
                        outcomes.append(self._run_nested(outer, request.fn))
                    if any(outcome.error is None for outcome in outcomes):
                        outer.commit()
                        self.commit_count += 1
                    else:
                        outer.abort()
                except BaseException:
                    outer.abort()
                    raise
        except BaseException as batch_error:
            log.exception("metadata write batch failed")
            failed = _Outcome(error=batch_error)
            for index, request in enumerate(batch):
                own = outcomes[index] if index < len(outcomes) else failed
                request.settle(own if own.error is not None else failed)
            return
        for request, outcome in zip(batch, outcomes, strict=True):
            request.settle(outcome)

    def _run_nested(self, outer: Tx, fn: Callable[[Tx], Any]) -> _Outcome:
        tx = self._begin_nested(outer)
        try:
            result = fn(tx)
        except BaseException as error:
            tx.abort()
            return _Outcome(error=error)
        tx.commit()
        return _Outcome(result=result, callbacks=tx.callbacks)

    @abstractmethod
    def _open_tree(self, name: str) -> Tree:
        """Open or create a tree; called with the write lock held."""

    @abstractmethod
    def _tree_names(self) -> list[str]: ...

    @abstractmethod
    def _begin(self) -> Tx:
        """Begin a top-level write transaction; called with the write lock held."""

    @abstractmethod
    def _begin_nested(self, parent: Tx) -> Tx:
        """Begin a transaction nested in `parent` that can be rolled back alone."""

    @abstractmethod
    def _close_engine(self) -> None: ...


class Tree(ABC):
    """A named, ordered map of bytes to bytes; reads see committed data only."""

    def __init__(self, db: Db, name: str) -> None:
        self.db = db
        self.name = name

    def get(self, key: bytes) -> bytes | None:
        check_key(key)
        self.db._check_open()
        return self._get(key)

    def range(
        self, start: bytes | None = None, end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[Item]:
        """Iterate the keys in [start, end) in byte order, or backwards with `reverse`.

        Each call reads one consistent snapshot, taken when iteration starts and
        held until the iterator is exhausted or dropped: do not keep a
        half-read iterator around, as it pins old data in the engine.
        """
        check_bounds(start, end)
        self.db._check_open()
        if is_empty_range(start, end):
            return iter(())
        return self._range(start or None, end, reverse)

    def count(self) -> int:
        self.db._check_open()
        return self._count()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    @abstractmethod
    def _get(self, key: bytes) -> bytes | None: ...

    @abstractmethod
    def _range(self, start: bytes | None, end: bytes | None, reverse: bool) -> Iterator[Item]:
        """Iterate a non-empty range; `start` is None or non-empty, `end` None or > start."""

    @abstractmethod
    def _count(self) -> int: ...


class Tx(ABC):
    """A write transaction handed to the function given to `transaction`/`transact`.

    It sees its own writes. It is valid only while that function runs.
    """

    def __init__(self, db: Db) -> None:
        self.db = db
        self.callbacks: list[Callable[[], None]] = []
        self._active = True

    def get(self, tree: Tree, key: bytes) -> bytes | None:
        self._check_tree(tree)
        check_key(key)
        return self._get(tree, key)

    def put(self, tree: Tree, key: bytes, value: bytes) -> None:
        self._check_tree(tree)
        check_key(key)
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"values are bytes, not {type(value).__name__}")
        self._put(tree, key, value)

    def delete(self, tree: Tree, key: bytes) -> bool:
        """Delete `key`; return whether it existed."""
        self._check_tree(tree)
        check_key(key)
        return self._delete(tree, key)

    def range(
        self,
        tree: Tree,
        start: bytes | None = None,
        end: bytes | None = None,
        *,
        reverse: bool = False,
    ) -> Iterator[Item]:
        """Iterate [start, end) like `Tree.range`, including this transaction's writes.

        Rows are read in chunks of TX_RANGE_CHUNK, so the tree may be modified
        while iterating; a change ahead of the current chunk may or may not be seen.
        """
        self._check_tree(tree)
        check_bounds(start, end)
        if is_empty_range(start, end):
            return iter(())
        return self._range_in_chunks(tree, start or None, end, reverse)

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once this transaction's changes are committed.

        With `transact` it runs on the caller's event loop, with `transaction`
        in the calling thread. It never runs if the changes are rolled back.
        An exception it raises is logged, not propagated: the data is committed.
        """
        self.callbacks.append(callback)

    def commit(self) -> None:
        self._active = False
        self._commit()

    def abort(self) -> None:
        if self._active:
            self._active = False
            self._abort()

    def _check_tree(self, tree: Tree) -> None:
        if not self._active:
            raise RuntimeError("this transaction is finished")
        if tree.db is not self.db:
            raise ValueError(f"{tree!r} belongs to another database")

    def _range_in_chunks(
        self, tree: Tree, start: bytes | None, end: bytes | None, reverse: bool
    ) -> Iterator[Item]:
        while True:
            if not self._active:
                raise RuntimeError("this transaction is finished")
            chunk = self._range_chunk(tree, start, end, reverse, TX_RANGE_CHUNK)
            yield from chunk
            if len(chunk) < TX_RANGE_CHUNK:
                return
            last_key = chunk[-1][0]
            if reverse:
                end = last_key
            else:
                start = last_key + b"\x00"  # the smallest key after last_key

    @abstractmethod
    def _get(self, tree: Tree, key: bytes) -> bytes | None: ...

    @abstractmethod
    def _put(self, tree: Tree, key: bytes, value: bytes | bytearray | memoryview) -> None: ...

    @abstractmethod
    def _delete(self, tree: Tree, key: bytes) -> bool: ...

    @abstractmethod
    def _range_chunk(
        self, tree: Tree, start: bytes | None, end: bytes | None, reverse: bool, limit: int
    ) -> list[Item]:
        """Up to `limit` rows of a non-empty range, in iteration order."""

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _abort(self) -> None: ...


def check_key(key: bytes) -> None:
    if not isinstance(key, bytes):
        raise TypeError(f"keys are bytes, not {type(key).__name__}")
    if not 0 < len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"a key has 1 to {MAX_KEY_BYTES} bytes, not {len(key)}")


def check_bounds(start: bytes | None, end: bytes | None) -> None:
    """Range bounds may be longer than MAX_KEY_BYTES: they need not be stored keys."""
    for bound in (start, end):
        if bound is not None and not isinstance(bound, bytes):
            raise TypeError(f"range bounds are bytes or None, not {type(bound).__name__}")


def is_empty_range(start: bytes | None, end: bytes | None) -> bool:
    return end is not None and (not end or (start is not None and start >= end))


@dataclass(slots=True)
class _Outcome:
    result: Any = None
    error: BaseException | None = None
    callbacks: list[Callable[[], None]] = field(default_factory=list)


@dataclass(slots=True)
class _Request:
    fn: Callable[[Tx], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]

    def settle(self, outcome: _Outcome) -> None:
        """Hand the outcome to the caller's loop (called from the writer thread)."""
        try:
            self.loop.call_soon_threadsafe(_settle_future, self.future, outcome)
        except RuntimeError:
            log.warning("event loop closed before a metadata write was acknowledged")


def _settle_future(future: asyncio.Future[Any], outcome: _Outcome) -> None:
    _run_callbacks(outcome.callbacks)
    if future.cancelled():
        return
    if outcome.error is not None:
        future.set_exception(outcome.error)
    else:
        future.set_result(outcome.result)


def _run_callbacks(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("on_commit callback %r failed", callback)
