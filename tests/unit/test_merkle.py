"""The table summary used by anti-entropy: incremental, order-independent, precise."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from granary.db import open_db
from granary.table.merkle import EMPTY, MerkleIndex, bucket_of, differing, row_digest

keys = st.binary(min_size=2, max_size=24)
values = st.binary(min_size=0, max_size=16)


def make_index(path, name="t"):
    db = open_db("lmdb", path, fsync=False)
    rows = db.tree(f"{name}:table")
    return db, rows, MerkleIndex(db, name, rows)


def write(db, rows, index, key, value):
    def apply(tx):
        old = tx.get(rows, key)
        if value is None:
            tx.delete(rows, key)
        else:
            tx.put(rows, key, value)
        index.update(tx, key, old, value)

    db.transaction(apply)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(keys, st.one_of(st.none(), values)), max_size=40), st.randoms())
def test_digests_depend_only_on_final_contents(tmp_path_factory, writes, rng):
    first = make_index(tmp_path_factory.mktemp("a"))
    second = make_index(tmp_path_factory.mktemp("b"))
    final: dict[bytes, bytes] = {}
    for key, value in writes:
        write(*first, key, value)
        if value is None:
            final.pop(key, None)
        else:
            final[key] = value
    shuffled = list(final.items())
    rng.shuffle(shuffled)
    for key, value in shuffled:
        write(*second, key, value)
    assert first[2].partition_digests() == second[2].partition_digests()
    for db, _, _ in (first, second):
        db.close()


def test_one_changed_row_is_found_through_the_levels(tmp_path):
    a = make_index(tmp_path / "a")
    b = make_index(tmp_path / "b")
    for i in range(500):
        key = bytes([i % 256]) + i.to_bytes(4, "big")
        write(*a, key, b"v")
        write(*b, key, b"v")
    changed = bytes([7]) + (7).to_bytes(4, "big")
    write(*b, changed, b"other")
    assert differing(a[2].partition_digests(), b[2].partition_digests()) == [7]
    buckets = differing(a[2].bucket_digests(7), b[2].bucket_digests(7))
    assert buckets == [bucket_of(changed)]
    mine, theirs = a[2].rows_in(7, buckets), b[2].rows_in(7, buckets)
    assert [k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k)] == [changed]
    assert theirs[changed] == row_digest(changed, b"other")


def test_emptied_partition_has_no_digest(tmp_path):
    db, rows, index = make_index(tmp_path)
    write(db, rows, index, b"\x01key", b"v")
    assert set(index.partition_digests()) == {1}
    write(db, rows, index, b"\x01key", None)
    assert index.partition_digests() == {}
    assert differing({1: EMPTY}, {}) == []
