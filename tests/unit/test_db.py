"""The metadata KV layer: every test runs against both engines."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from granary.db import ENGINES, MAX_KEY_BYTES, Db, Tx, open_db
from granary.db.base import MAX_BATCH, TX_RANGE_CHUNK
from granary.db.lmdb_engine import LmdbDb
from granary.db.sqlite_engine import SqliteDb

SMALL_MAP = 1 << 30


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db(engine: str, tmp_path: Path):
    database = open_db(engine, tmp_path / "missing" / "meta", fsync=False, map_size=SMALL_MAP)
    yield database
    database.close()


def put_all(db: Db, tree_name: str, items: dict[bytes, bytes]) -> None:
    tree = db.tree(tree_name)

    def write(tx: Tx) -> None:
        for key, value in items.items():
            tx.put(tree, key, value)

    db.transaction(write)


def expected_range(
    keys: list[bytes], start: bytes | None, end: bytes | None, reverse: bool
) -> list[bytes]:
    selected = sorted(k for k in keys if (start is None or k >= start) and (end is None or k < end))
    return selected[::-1] if reverse else selected


# Binary keys on purpose: zero bytes, 0xff, and prefixes of each other.
ODD_KEYS = [
    b"\x00",
    b"\x00\x00",
    b"\x00\x01",
    b"\x01",
    b"a",
    b"ab",
    b"b",
    b"\xfe",
    b"\xff",
    b"\xff\xff",
]


def test_put_get_delete(db: Db) -> None:
    tree = db.tree("objects")
    db.transaction(lambda tx: tx.put(tree, b"k", b"v1"))
    assert tree.get(b"k") == b"v1"
    db.transaction(lambda tx: tx.put(tree, b"k", b"v2"))
    assert tree.get(b"k") == b"v2"
    assert db.transaction(lambda tx: tx.delete(tree, b"k")) is True
    assert tree.get(b"k") is None
    assert db.transaction(lambda tx: tx.delete(tree, b"k")) is False
    assert tree.count() == 0


def test_values_may_be_empty_or_any_bytes_like(db: Db) -> None:
    tree = db.tree("t")

    def write(tx: Tx) -> None:
        tx.put(tree, b"empty", b"")
        tx.put(tree, b"array", bytearray(b"\x00\xff"))
        tx.put(tree, b"view", memoryview(b"abc"))

    db.transaction(write)
    assert tree.get(b"empty") == b""
    assert tree.get(b"array") == b"\x00\xff"
    assert tree.get(b"view") == b"abc"


def test_trees_are_separate_and_listed(db: Db) -> None:
    first, second = db.tree("first"), db.tree("second")
    assert db.tree("first") is first
    db.transaction(lambda tx: tx.put(first, b"k", b"1"))
    assert second.get(b"k") is None
    assert second.count() == 0
    assert db.tree_names() == ["first", "second"]
    with pytest.raises(ValueError):
        db.tree("")


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(
    ("start", "end"),
    [
        (None, None),
        (b"\x00", None),
        (b"\x00\x00", b"\x01"),
        (b"a", b"b"),
        (b"aa", b"b"),
        (None, b"\x00\x01"),
        (b"\xff", None),
        (b"\x00\x00\x00", b"\xff\xff\x00"),
        (b"\xff\xff\xff", None),
        (b"c", b"d"),
        (b"b", b"b"),
        (b"b", b"a"),
        (None, b""),
        (b"", None),
    ],
)
def test_range_bounds(db: Db, start: bytes | None, end: bytes | None, reverse: bool) -> None:
    put_all(db, "t", {key: key + b"!" for key in ODD_KEYS})
    tree = db.tree("t")
    got = list(tree.range(start, end, reverse=reverse))
    want = expected_range(ODD_KEYS, start or None, end, reverse)
    assert [key for key, _ in got] == want
    assert all(value == key + b"!" for key, value in got)
    in_tx = db.transaction(lambda tx: list(tx.range(tree, start, end, reverse=reverse)))
    assert in_tx == got


def test_range_of_empty_tree(db: Db) -> None:
    tree = db.tree("empty")
    assert list(tree.range()) == []
    assert list(tree.range(reverse=True)) == []
    assert list(tree.range(b"a", b"z", reverse=True)) == []


def test_range_bounds_longer_than_a_key(db: Db) -> None:
    long_key = b"p" * MAX_KEY_BYTES
    keys = [b"p" * 10, long_key[:-1] + b"o", long_key, b"q"]
    put_all(db, "t", dict.fromkeys(keys, b"v"))
    tree = db.tree("t")
    bound = long_key + b"\x00"  # just after the longest possible key with this prefix
    assert [k for k, _ in tree.range(start=bound)] == [b"q"]
    assert [k for k, _ in tree.range(end=bound, reverse=True)] == sorted(keys[:3], reverse=True)
    assert [k for k, _ in tree.range(end=long_key + b"\xff")] == sorted(keys[:3])


def test_key_limits_are_the_same_for_every_engine(db: Db) -> None:
    tree = db.tree("t")
    longest = b"\xff" * MAX_KEY_BYTES
    db.transaction(lambda tx: tx.put(tree, longest, b"v"))
    assert tree.get(longest) == b"v"
    too_long = longest + b"\xff"
    for bad_key in (too_long, b""):
        with pytest.raises(ValueError):
            db.transaction(lambda tx, key=bad_key: tx.put(tree, key, b"v"))
        with pytest.raises(ValueError):
            tree.get(bad_key)
        with pytest.raises(ValueError):
            db.transaction(lambda tx, key=bad_key: tx.delete(tree, key))
    with pytest.raises(TypeError):
        tree.get("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        db.transaction(lambda tx: tx.put(tree, b"k", "text"))  # type: ignore[arg-type]
    assert tree.count() == 1


def test_transaction_rolls_back_on_exception(db: Db) -> None:
    put_all(db, "t", {b"kept": b"old", b"doomed": b"x"})
    tree = db.tree("t")
    before = db.commit_count

    def fail(tx: Tx) -> None:
        tx.put(tree, b"kept", b"new")
        tx.put(tree, b"added", b"x")
        tx.delete(tree, b"doomed")
        raise LookupError("boom")

    with pytest.raises(LookupError, match="boom"):
        db.transaction(fail)
    assert list(tree.range()) == [(b"doomed", b"x"), (b"kept", b"old")]
    assert db.commit_count == before


def test_transaction_sees_its_own_writes(db: Db) -> None:
    put_all(db, "t", {b"a": b"1", b"b": b"2"})
    tree = db.tree("t")

    def work(tx: Tx) -> tuple[object, ...]:
        tx.put(tree, b"c", b"3")
        tx.delete(tree, b"a")
        tx.put(tree, b"b", b"22")
        return tx.get(tree, b"a"), tx.get(tree, b"b"), list(tx.range(tree)), tree.get(b"b")

    missing, updated, rows, committed = db.transaction(work)
    assert (missing, updated) == (None, b"22")
    assert rows == [(b"b", b"22"), (b"c", b"3")]
    assert committed == b"2"  # a plain read sees only committed data


def test_tx_range_spans_chunks_and_tolerates_deletes(db: Db) -> None:
    n = TX_RANGE_CHUNK * 2 + 7
    keys = [i.to_bytes(2, "big") for i in range(n)]
    put_all(db, "t", dict.fromkeys(keys, b"v"))
    tree = db.tree("t")
    assert db.transaction(lambda tx: [k for k, _ in tx.range(tree)]) == keys
    assert db.transaction(lambda tx: [k for k, _ in tx.range(tree, reverse=True)]) == keys[::-1]

    def delete_while_iterating(tx: Tx) -> int:
        deleted = 0
        for key, _ in tx.range(tree, keys[5]):
            deleted += tx.delete(tree, key)
        return deleted

    assert db.transaction(delete_while_iterating) == n - 5
    assert [k for k, _ in tree.range()] == keys[:5]


def test_tx_cannot_be_used_after_its_function_returns(db: Db) -> None:
    tree = db.tree("t")
    leaked = db.transaction(lambda tx: tx)
    with pytest.raises(RuntimeError):
        leaked.put(tree, b"k", b"v")
    rows = db.transaction(lambda tx: tx.range(tree))
    with pytest.raises(RuntimeError):
        list(rows)


def test_tree_of_another_database_is_refused(db: Db, tmp_path: Path) -> None:
    other = open_db("sqlite", tmp_path / "other", fsync=False)
    try:
        foreign = other.tree("t")
        with pytest.raises(ValueError):
            db.transaction(lambda tx: tx.put(foreign, b"k", b"v"))
    finally:
        other.close()


def test_nested_write_in_the_same_thread_is_refused(db: Db) -> None:
    tree = db.tree("t")

    def nested(tx: Tx) -> None:
        db.transaction(lambda inner: inner.put(tree, b"k", b"v"))

    with pytest.raises(RuntimeError):
        db.transaction(nested)
    with pytest.raises(RuntimeError):
        db.transaction(lambda tx: db.close())


def test_on_commit_runs_after_commit_only(db: Db) -> None:
    tree = db.tree("t")
    seen: list[bytes | None] = []

    def commit(tx: Tx) -> None:
        tx.put(tree, b"k", b"v")
        tx.on_commit(lambda: seen.append(tree.get(b"k")))
        assert seen == []

    db.transaction(commit)
    assert seen == [b"v"]

    def fail(tx: Tx) -> None:
        tx.on_commit(lambda: seen.append(b"never"))
        raise ValueError

    with pytest.raises(ValueError):
        db.transaction(fail)
    assert seen == [b"v"]


def test_failing_on_commit_callback_is_logged_not_raised(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    tree = db.tree("t")

    def commit(tx: Tx) -> str:
        tx.put(tree, b"k", b"v")
        tx.on_commit(lambda: 1 / 0)
        return "done"

    with caplog.at_level(logging.ERROR, logger="granary.db.base"):
        assert db.transaction(commit) == "done"
    assert "on_commit" in caplog.text
    assert tree.get(b"k") == b"v"


def test_transact_runs_on_commit_on_the_loop_after_commit(db: Db) -> None:
    tree = db.tree("t")

    async def main() -> tuple[int, list[tuple[int, bytes | None]]]:
        calls: list[tuple[int, bytes | None]] = []

        def write(tx: Tx) -> int:
            tx.put(tree, b"k", b"v")
            tx.on_commit(lambda: calls.append((threading.get_ident(), tree.get(b"k"))))
            return threading.get_ident()

        def fail(tx: Tx) -> None:
            tx.on_commit(lambda: calls.append((0, b"never")))
            raise KeyError

        writer_thread, failure = await asyncio.gather(
            db.transact(write), db.transact(fail), return_exceptions=True
        )
        assert isinstance(failure, KeyError)
        assert writer_thread != threading.get_ident()
        return threading.get_ident(), calls

    loop_thread, calls = asyncio.run(main())
    assert calls == [(loop_thread, b"v")]


def hold_write_lock(db: Db) -> tuple[threading.Thread, threading.Event]:
    """Start a synchronous transaction in a thread that waits until the event is set."""
    entered, release = threading.Event(), threading.Event()

    def hold(tx: Tx) -> None:
        entered.set()
        assert release.wait(30)

    thread = threading.Thread(target=db.transaction, args=(hold,))
    thread.start()
    assert entered.wait(30)
    return thread, release


def test_group_commit_isolates_failures(db: Db) -> None:
    tree = db.tree("t")
    put_all(db, "t", {b"keep": b"yes", b"counter": b"0"})
    calls = 200

    def make(i: int):
        def fn(tx: Tx) -> int:
            counter = int(tx.get(tree, b"counter") or b"0") + 1
            tx.put(tree, b"counter", str(counter).encode())
            tx.put(tree, b"key%03d" % i, b"v")
            if i % 5 == 0:
                tx.delete(tree, b"keep")
                raise ValueError(i)
            return i

        return fn

    async def main() -> list[object]:
        holder, release = hold_write_lock(db)
        tasks = [asyncio.create_task(db.transact(make(i))) for i in range(calls)]
        await asyncio.sleep(0)  # every task has now queued its request
        await asyncio.sleep(0)
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        holder.join()
        return results

    before = db.commit_count
    results = asyncio.run(main())
    batches = db.commit_count - before - 1  # minus the holder's own commit
    failed = [i for i in range(calls) if i % 5 == 0]
    assert [r.args[0] for r in results if isinstance(r, ValueError)] == failed
    assert [r for r in results if not isinstance(r, Exception)] == [
        i for i in range(calls) if i % 5
    ]
    assert tree.get(b"keep") == b"yes"
    assert tree.get(b"counter") == str(calls - len(failed)).encode()
    assert all((tree.get(b"key%03d" % i) is None) == (i % 5 == 0) for i in range(calls))
    assert 1 <= batches <= 2 < calls


def test_group_commit_caps_the_batch(db: Db) -> None:
    tree = db.tree("t")
    calls = MAX_BATCH + 44

    async def main() -> None:
        holder, release = hold_write_lock(db)
        tasks = [
            asyncio.create_task(db.transact(lambda tx, i=i: tx.put(tree, b"%04d" % i, b"v")))
            for i in range(calls)
        ]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*tasks)
        holder.join()

    before = db.commit_count
    asyncio.run(main())
    assert 2 <= db.commit_count - before - 1 <= 3
    assert tree.count() == calls


def test_transact_batch_where_every_call_fails_commits_nothing(db: Db) -> None:
    tree = db.tree("t")

    def fail(tx: Tx) -> None:
        tx.put(tree, b"k", b"v")
        raise RuntimeError("no")

    async def main() -> None:
        with pytest.raises(RuntimeError, match="no"):
            await db.transact(fail)

    before = db.commit_count
    asyncio.run(main())
    assert db.commit_count == before
    assert tree.get(b"k") is None


def test_close_finishes_queued_writes_then_refuses_more(db: Db) -> None:
    tree = db.tree("t")

    async def main() -> None:
        tasks = [asyncio.create_task(db.transact(lambda tx: tx.put(tree, b"k", b"v")))]
        await asyncio.sleep(0)
        db.close()
        await asyncio.gather(*tasks)
        with pytest.raises(RuntimeError):
            await db.transact(lambda tx: None)

    asyncio.run(main())
    with pytest.raises(RuntimeError):
        tree.get(b"k")
    with pytest.raises(RuntimeError):
        db.transaction(lambda tx: None)
    db.close()


@pytest.mark.parametrize("fsync", [True, False])
def test_data_survives_close_and_reopen(engine: str, tmp_path: Path, fsync: bool) -> None:
    path = tmp_path / "meta"
    first = open_db(engine, path, fsync=fsync)
    put_all(first, "objects", {b"\x00": b"zero", b"\xff": b"ff"})
    first.tree("empty")

    async def more() -> None:
        tree = first.tree("objects")
        await first.transact(lambda tx: tx.put(tree, b"async", b"yes"))

    asyncio.run(more())
    first.close()

    second = open_db(engine, path, fsync=fsync)
    try:
        assert second.tree_names() == ["empty", "objects"]
        assert list(second.tree("objects").range()) == [
            (b"\x00", b"zero"),
            (b"async", b"yes"),
            (b"\xff", b"ff"),
        ]
    finally:
        second.close()


def test_paused_range_keeps_its_snapshot(db: Db) -> None:
    put_all(db, "t", {b"%02d" % i: b"old" for i in range(20)})
    tree = db.tree("t")
    before = list(tree.range())
    forward, backward = tree.range(), tree.range(reverse=True)
    first_rows = [next(forward), next(backward)]

    def rewrite(tx: Tx) -> None:
        for i in range(0, 20, 2):
            tx.delete(tree, b"%02d" % i)
        for i in range(1, 20, 2):
            tx.put(tree, b"%02d" % i, b"new")
        tx.put(tree, b"99", b"new")

    db.transaction(rewrite)
    # A point read in this same thread, while both iterators are paused, is fresh.
    assert tree.get(b"01") == b"new"
    assert tree.get(b"00") is None
    assert [first_rows[0], *forward] == before
    assert [first_rows[1], *backward] == before[::-1]
    assert len(list(tree.range())) == 11


def test_readers_in_threads_see_whole_commits_only(db: Db) -> None:
    tree = db.tree("t")
    put_all(db, "t", {b"a": b"0", b"b": b"0"})
    stop = threading.Event()
    errors: list[str] = []

    def read() -> None:
        while not stop.is_set():
            rows = dict(tree.range())
            if rows[b"a"] != rows[b"b"]:
                errors.append(f"torn snapshot {rows}")

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()

    async def write() -> None:
        def bump(tx: Tx) -> None:
            value = str(int(tx.get(tree, b"a") or b"0") + 1).encode()
            tx.put(tree, b"a", value)
            tx.put(tree, b"b", value)

        for _ in range(20):
            await asyncio.gather(*(db.transact(bump) for _ in range(10)))

    try:
        asyncio.run(write())
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert errors == []
    assert tree.get(b"a") == tree.get(b"b") == b"200"


@pytest.mark.parametrize("fsync", [True, False])
def test_fsync_setting_reaches_the_engine(engine: str, tmp_path: Path, fsync: bool) -> None:
    db = open_db(engine, tmp_path / "meta", fsync=fsync, map_size=SMALL_MAP)
    try:
        if isinstance(db, LmdbDb):
            flags = db._env.flags()
            assert (flags["sync"], flags["metasync"]) == (fsync, fsync)
        else:
            assert isinstance(db, SqliteDb)
            (level,) = db._writer_conn.execute("PRAGMA synchronous").fetchone()
            assert level == (2 if fsync else 1)  # FULL or NORMAL
            (mode,) = db._writer_conn.execute("PRAGMA journal_mode").fetchone()
            assert mode == "wal"
    finally:
        db.close()


def test_unknown_engine_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rocksdb"):
        open_db("rocksdb", tmp_path, fsync=False)


KEY_BYTE = st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF])
KEYS = st.lists(KEY_BYTE, min_size=1, max_size=3).map(bytes)
BOUNDS = st.none() | st.lists(KEY_BYTE, max_size=3).map(bytes)
VALUES = st.binary(max_size=6)
OPS = st.lists(st.tuples(KEYS, st.none() | VALUES), max_size=6)  # None value = delete


class EngineMatchesDict(RuleBasedStateMachine):
    """Random writes, transactions and scans, compared with a plain dict."""

    engine = "lmdb"

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.path = Path(self.tmp.name) / "meta"
        self.model: dict[bytes, bytes] = {}
        self.open()

    def open(self) -> None:
        self.db = open_db(self.engine, self.path, fsync=False, map_size=SMALL_MAP)
        self.tree = self.db.tree("t")

    def apply(self, tx: Tx, ops: list[tuple[bytes, bytes | None]]) -> None:
        for key, value in ops:
            if value is None:
                tx.delete(self.tree, key)
            else:
                tx.put(self.tree, key, value)

    def apply_to_model(self, ops: list[tuple[bytes, bytes | None]]) -> None:
        for key, value in ops:
            if value is None:
                self.model.pop(key, None)
            else:
                self.model[key] = value

    @rule(key=KEYS, value=VALUES)
    def put(self, key: bytes, value: bytes) -> None:
        self.db.transaction(lambda tx: tx.put(self.tree, key, value))
        self.model[key] = value

    @rule(key=KEYS)
    def delete(self, key: bytes) -> None:
        existed = self.db.transaction(lambda tx: tx.delete(self.tree, key))
        assert existed == (self.model.pop(key, None) is not None)

    @rule(ops=OPS, fail=st.booleans())
    def transaction(self, ops: list[tuple[bytes, bytes | None]], fail: bool) -> None:
        def work(tx: Tx) -> None:
            self.apply(tx, ops)
            if fail:
                raise ValueError

        try:
            self.db.transaction(work)
        except ValueError:
            return
        self.apply_to_model(ops)

    @rule(batches=st.lists(st.tuples(OPS, st.booleans()), min_size=1, max_size=5))
    def transact(self, batches: list[tuple[list[tuple[bytes, bytes | None]], bool]]) -> None:
        def make(ops: list[tuple[bytes, bytes | None]], fail: bool):
            def work(tx: Tx) -> None:
                self.apply(tx, ops)
                if fail:
                    raise ValueError

            return work

        async def main() -> list[object]:
            calls = (self.db.transact(make(ops, fail)) for ops, fail in batches)
            return await asyncio.gather(*calls, return_exceptions=True)

        asyncio.run(main())
        for ops, fail in batches:
            if not fail:
                self.apply_to_model(ops)

    @rule()
    def reopen(self) -> None:
        self.db.close()
        self.open()

    @rule(key=KEYS)
    def get(self, key: bytes) -> None:
        assert self.tree.get(key) == self.model.get(key)

    @rule(start=BOUNDS, end=BOUNDS, reverse=st.booleans())
    def scan(self, start: bytes | None, end: bytes | None, reverse: bool) -> None:
        want_keys = expected_range(list(self.model), start or None, end, reverse)
        want = [(key, self.model[key]) for key in want_keys]
        assert list(self.tree.range(start, end, reverse=reverse)) == want
        scanned = self.db.transaction(
            lambda tx: list(tx.range(self.tree, start, end, reverse=reverse))
        )
        assert scanned == want

    @invariant()
    def counts_match(self) -> None:
        assert self.tree.count() == len(self.model)

    def teardown(self) -> None:
        self.db.close()
        self.tmp.cleanup()


class SqliteMatchesDict(EngineMatchesDict):
    engine = "sqlite"


TestLmdbMatchesDict = EngineMatchesDict.TestCase
TestSqliteMatchesDict = SqliteMatchesDict.TestCase
TestLmdbMatchesDict.settings = TestSqliteMatchesDict.settings = settings(
    max_examples=100, stateful_step_count=25, deadline=None
)
