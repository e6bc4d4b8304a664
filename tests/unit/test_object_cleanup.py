"""Object rows that nothing will ever list (a failed PUT to a new key leaves one holding
only its Aborted version) are tombstones: the table's tombstone GC forgets them, and
a late merge of the same upload brings nothing back and loses no complete version."""

from __future__ import annotations

import asyncio

import pytest
from block_fakes import OneNodeReplication

from granary.db import open_db
from granary.model.object import (
    ABORTED,
    COMPLETE,
    DELETE_MARKER,
    INLINE,
    UPLOADING,
    Object,
    ObjectMeta,
    ObjectTable,
    ObjectVersion,
)
from granary.table.gc import TombstoneGc
from granary.table.table import Table

ME = b"m" * 32
BUCKET = b"b" * 16
UUID, OTHER = b"u" * 16, b"o" * 16
META = ObjectMeta(size=4, etag="e", headers=[])


@pytest.fixture
def table(tmp_path):
    db = open_db("sqlite", tmp_path / "meta", fsync=False)
    yield Table(ObjectTable(), db, OneNodeReplication(ME), ME)
    db.close()


def row(*versions: ObjectVersion) -> Object:
    return Object(BUCKET, "k", list(versions))


def aborted(uuid: bytes = UUID, timestamp: int = 10, multipart: bool = False) -> ObjectVersion:
    return ObjectVersion(uuid, timestamp, ABORTED, multipart=multipart)


def complete(uuid: bytes, timestamp: int) -> ObjectVersion:
    return ObjectVersion(uuid, timestamp, COMPLETE, kind=INLINE, meta=META, inline=b"data")


def merge_then_collect(table: Table, *rows: Object) -> tuple[int, Object | None]:
    gc = TombstoneGc(table, rpc=None, delay_ms=0)

    async def main() -> tuple[int, Object | None]:
        for entry in rows:
            await table.local_merge([entry])
        settled = await gc.collect()
        return settled, table.local_get(BUCKET, b"k")

    return asyncio.run(main())


def test_rows_nothing_lists_are_tombstones() -> None:
    assert row(aborted()).is_tombstone()
    assert row(aborted(), aborted(OTHER, 11, multipart=True)).is_tombstone()
    marker = ObjectVersion(OTHER, 5, COMPLETE, kind=DELETE_MARKER)
    assert row(marker).is_tombstone()
    assert row(marker, aborted()).is_tombstone()


def test_rows_with_data_or_a_running_upload_are_not() -> None:
    assert not row(complete(OTHER, 5), aborted()).is_tombstone()
    assert not row(ObjectVersion(UUID, 10, UPLOADING, multipart=True)).is_tombstone()
    assert not row(aborted(), ObjectVersion(OTHER, 11, UPLOADING, multipart=True)).is_tombstone()


def test_the_row_a_failed_put_to_a_new_key_leaves_is_forgotten(table) -> None:
    settled, left = merge_then_collect(table, row(aborted()))
    assert settled == 1
    assert left is None
    assert list(table.local_range(BUCKET)) == []


def test_a_failed_overwrite_keeps_the_row_of_the_current_version(table) -> None:
    settled, left = merge_then_collect(table, row(complete(OTHER, 5)), row(aborted()))
    assert settled == 0
    assert left is not None and left.current() == complete(OTHER, 5)


def test_a_late_uploading_copy_never_outranks_the_abort(table) -> None:
    late = ObjectVersion(UUID, 10, UPLOADING, multipart=True)
    _, left = merge_then_collect(table, row(aborted(multipart=True)), row(late))
    assert left is None, "merged into the aborted row, which stays a tombstone"


def test_the_same_upload_completing_late_is_kept(table) -> None:
    """A commit gets a fresh timestamp: it is another entry, never merged away by the abort."""
    _, left = merge_then_collect(table, row(aborted()), row(complete(UUID, 20)))
    assert left is not None and left.current() == complete(UUID, 20)

    async def again() -> Object | None:
        await table.local_merge([row(complete(UUID, 20))])
        return table.local_get(BUCKET, b"k")

    assert asyncio.run(again()).current() == complete(UUID, 20)


def test_a_complete_version_merged_after_the_row_was_forgotten_recreates_it(table) -> None:
    settled, left = merge_then_collect(table, row(aborted()))
    assert (settled, left) == (1, None)
    asyncio.run(table.local_merge([row(complete(UUID, 20))]))
    assert table.local_get(BUCKET, b"k").current() == complete(UUID, 20)
