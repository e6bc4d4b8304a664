"""The table summary used by anti-entropy: incremental, order-independent, precise."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from granary.db import open_db
from granary.table.merkle import (
    BUILT_INDEXES_TREE,
    EMPTY,
    DigestPage,
    MerkleIndex,
    RowIndexNotReady,
    after,
    bucket_of,
    compare_pages,
    differing,
    position_of,
    row_digest,
)

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
    comparison = compare_pages(a[2].rows_in(7, buckets), b[2].rows_in(7, buckets))
    assert comparison.only_mine == comparison.only_theirs == [changed]
    assert comparison.horizon is None
    assert (position_of(changed), row_digest(changed, b"other")) in b[2].rows_in(7, buckets).rows


def test_emptied_partition_has_no_digest(tmp_path):
    db, rows, index = make_index(tmp_path)
    write(db, rows, index, b"\x01key", b"v")
    assert set(index.partition_digests()) == {1}
    write(db, rows, index, b"\x01key", None)
    assert index.partition_digests() == {}
    assert differing({1: EMPTY}, {}) == []


def all_pages(index, partition, buckets, limit):
    """Every page of a walk over some buckets of a partition."""
    pages, start = [], None
    while True:
        page = index.rows_in(partition, buckets, start, limit)
        pages.append(page)
        if page.horizon is None:
            return pages
        start = after(page.horizon)


def test_row_digests_come_in_bounded_pages_that_resume_after_their_horizon(tmp_path):
    db, rows, index = make_index(tmp_path)
    stored = {}
    for i in range(700):
        key = bytes([3]) + i.to_bytes(4, "big")
        stored[key] = b"v%d" % i
        write(db, rows, index, key, stored[key])
    write(db, rows, index, bytes([4]) + b"other", b"v")  # another partition stays out
    wanted = [b for b in range(256) if b % 3 == 0]
    pages = all_pages(index, 3, wanted, 64)
    assert all(len(page.rows) <= 64 for page in pages)
    walked = [row for page in pages for row in page.rows]
    expected = sorted(
        (position_of(key), row_digest(key, value))
        for key, value in stored.items()
        if bucket_of(key) in wanted
    )
    assert walked == expected
    assert all(page.horizon == page.rows[-1][0] for page in pages[:-1])
    db.close()


def test_a_page_never_reads_more_than_its_limit(tmp_path):
    db, rows, index = make_index(tmp_path)
    for i in range(50):
        write(db, rows, index, bytes([9]) + i.to_bytes(4, "big"), b"v")
    page = index.rows_in(9, range(256), None, 10)
    assert len(page.rows) == 10 and page.horizon == page.rows[-1][0]
    assert len(index.rows_in(9, range(256), None, 10**9).rows) == 50  # capped, not more
    db.close()


def test_pages_of_different_sizes_compare_up_to_the_smaller_horizon():
    def page(keys, digest, horizon):
        return DigestPage(
            [(position_of(k), digest) for k in sorted(keys, key=position_of)], horizon
        )

    keys = sorted((b"\x05" + bytes([i]) * 20 for i in range(10)), key=position_of)
    mine = page(keys[:4], b"m" * 16, position_of(keys[3]))
    theirs = page(keys[:8], b"t" * 16, None)
    comparison = compare_pages(mine, theirs)
    assert comparison.horizon == position_of(keys[3])
    assert comparison.only_mine == comparison.only_theirs == keys[:4]
    bounded = compare_pages(page(keys, b"m" * 16, None), theirs, end=position_of(keys[1]))
    assert bounded.only_mine == keys[:2] and bounded.horizon == position_of(keys[1])


def test_the_row_index_is_built_for_rows_written_before_it(tmp_path):
    db, rows, index = make_index(tmp_path)
    stored = {}
    for i in range(1200):
        key = bytes([i % 2]) + i.to_bytes(4, "big")
        stored[key] = b"v%d" % i
        write(db, rows, index, key, stored[key])

    def as_before_the_index(tx):  # what a node of the previous release left on disk
        for index_key, _ in list(tx.range(index.row_index)):
            tx.delete(index.row_index, index_key)
        tx.put(index.row_index, bytes([1, 7]) + b"\x01stray-row-key", EMPTY)
        tx.delete(db.tree(BUILT_INDEXES_TREE), index.row_index.name.encode())

    db.transaction(as_before_the_index)
    reopened = MerkleIndex(db, "t", rows)
    with pytest.raises(RowIndexNotReady):
        reopened.rows_in(0, range(256))
    assert asyncio.run(reopened.build_row_index()) == 1200
    for partition in (0, 1):
        walked = [
            row for page in all_pages(reopened, partition, range(256), 100) for row in page.rows
        ]
        assert walked == sorted(
            (position_of(key), row_digest(key, value))
            for key, value in stored.items()
            if key[0] == partition
        )
    assert MerkleIndex(db, "t", rows).rows_indexed  # the marker stays
    assert asyncio.run(MerkleIndex(db, "t", rows).build_row_index()) == 0
    db.close()
