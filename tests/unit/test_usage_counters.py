"""Per-bucket usage counters kept with the rows (model/usage.py, table/counters.py):
every way a local row changes or goes moves them by exactly the difference, and the
recount at start counts the rows written before they existed, once."""

from __future__ import annotations

import asyncio
import random

import pytest
from test_table_gc import Row, Rows
from test_table_handover import LeftReplication, NewHolders, Progress

from granary.db import open_db
from granary.model.mpu_index import UploadIndexEntry, UploadIndexTable, index_tombstone
from granary.model.object import (
    ABORTED,
    BLOCKS,
    COMPLETE,
    DELETE_MARKER,
    INLINE,
    UPLOADING,
    Object,
    ObjectMeta,
    ObjectTable,
    ObjectVersion,
)
from granary.model.usage import BucketUsage, Usage
from granary.model.version import VersionTable
from granary.table.counters import DONE, RowCounters
from granary.table.gc import TombstoneGc
from granary.table.sync import TableSync
from granary.table.table import Table

ME = b"m" * 32
B1, B2 = b"\x01" * 32, b"\x02" * 32


class Here:
    """Every partition held by this node alone."""

    full_copy = False

    def write_sets(self, partition: int) -> list[list[bytes]]:
        return [[ME]]

    def storage_nodes(self, partition: int) -> list[bytes]:
        return [ME]

    def read_nodes(self, partition: int) -> list[bytes]:
        return [ME]

    def write_quorum(self, nodes: int) -> int:
        return 1

    def read_quorum(self, nodes: int) -> int:
        return 1

    def write_guard(self):
        from contextlib import nullcontext

        return nullcontext()


@pytest.fixture
def db(tmp_path):
    database = open_db("sqlite", tmp_path / "meta", fsync=False)
    yield database
    database.close()


def build(db, replication=None, *, counted: bool = True):
    """Object and upload-index tables, with their counters kept unless `counted` is False."""
    replication = replication or Here()
    object_schema, index_schema = ObjectTable(), UploadIndexTable()
    objects = Table(object_schema, db, replication, ME)
    uploads = Table(index_schema, db, replication, ME)
    object_schema.versions = Table(VersionTable(), db, replication, ME)
    usage = Usage(objects, uploads)
    if counted:
        object_schema.usage, index_schema.usage = usage.objects, usage.uploads
        asyncio.run(usage.recount())  # nothing to count: marks the counters complete
    return objects, uploads, usage


def data(uuid: bytes, timestamp: int, size: int, *, blocks: bool = False) -> ObjectVersion:
    meta = ObjectMeta(size=size, etag="e", headers=[])
    if blocks:
        return ObjectVersion(uuid, timestamp, COMPLETE, kind=BLOCKS, meta=meta, first_block=b"x")
    return ObjectVersion(uuid, timestamp, COMPLETE, kind=INLINE, meta=meta, inline=b"d")


def marker(uuid: bytes, timestamp: int) -> ObjectVersion:
    return ObjectVersion(uuid, timestamp, COMPLETE, kind=DELETE_MARKER)


def obj(key: str, *versions: ObjectVersion, bucket: bytes = B1) -> Object:
    return Object(bucket, key, list(versions))


def merge(table: Table, *rows) -> None:
    asyncio.run(table.local_merge(list(rows)))


def upload(key: str, upload_id: bytes, bucket: bytes = B1) -> UploadIndexEntry:
    return UploadIndexEntry(bucket, key, upload_id, 1)


def test_puts_overwrites_and_deletes_move_objects_and_bytes(db):
    objects, _, usage = build(db)
    merge(objects, obj("a", data(b"1" * 16, 10, 100)))
    merge(objects, obj("b", data(b"2" * 16, 11, 1000, blocks=True)))
    assert usage.local(B1) == BucketUsage(2, 1100, 0)
    merge(objects, obj("a", data(b"3" * 16, 12, 250)))  # overwritten, other size
    assert usage.local(B1) == BucketUsage(2, 1250, 0)
    merge(objects, obj("b", marker(b"4" * 16, 13)))  # deleted
    assert usage.local(B1) == BucketUsage(1, 250, 0)
    merge(objects, obj("b", marker(b"5" * 16, 14)))  # deleting what is not there
    assert usage.local(B1) == BucketUsage(1, 250, 0)
    merge(objects, obj("b", data(b"6" * 16, 15, 7)))  # written again
    assert usage.local(B1) == BucketUsage(2, 257, 0)
    assert usage.local(B2) == BucketUsage()


def test_uploads_in_progress_and_aborted_ones_count_for_nothing(db):
    objects, _, usage = build(db)
    merge(objects, obj("a", ObjectVersion(b"1" * 16, 10, UPLOADING)))
    assert usage.local(B1) == BucketUsage()
    merge(objects, obj("a", ObjectVersion(b"1" * 16, 10, ABORTED)))
    assert usage.local(B1) == BucketUsage()
    merge(objects, obj("a", data(b"2" * 16, 11, 5), ObjectVersion(b"3" * 16, 12, UPLOADING)))
    assert usage.local(B1) == BucketUsage(1, 5, 0)


def test_a_replica_merging_an_older_row_counts_the_newest_only(db):
    objects, _, usage = build(db)
    newest = obj("a", data(b"2" * 16, 20, 300))
    older = obj("a", data(b"1" * 16, 10, 100))
    merge(objects, newest)
    merge(objects, older)  # read repair or anti-entropy bringing an old copy
    merge(objects, newest)  # and the same row twice
    assert usage.local(B1) == BucketUsage(1, 300, 0)
    merge(objects, obj("a", marker(b"0" * 16, 5)))  # an old deletion changes nothing
    assert usage.local(B1) == BucketUsage(1, 300, 0)


def test_multipart_uploads_created_completed_and_aborted(db):
    _, uploads, usage = build(db)
    merge(uploads, upload("a", b"u1"), upload("a", b"u2"), upload("b", b"u3", B2))
    assert usage.local(B1).unfinished_uploads == 2
    assert usage.local(B2).unfinished_uploads == 1
    merge(uploads, index_tombstone(B1, "a", b"u1"))  # completed
    merge(uploads, index_tombstone(B2, "b", b"u3"))  # aborted
    assert (usage.local(B1).unfinished_uploads, usage.local(B2).unfinished_uploads) == (1, 0)
    merge(uploads, upload("a", b"u1"))  # a late copy of the creation: the end wins
    merge(uploads, index_tombstone(B1, "a", b"u1"))
    assert usage.local(B1).unfinished_uploads == 1
    assert list(usage.uploads.items()) == [(B1, (1,))]  # zero counts are not kept


def test_collected_tombstones_leave_the_counts_as_they_were(db):
    objects, uploads, usage = build(db)
    gcs = [TombstoneGc(table, rpc=None, delay_ms=0) for table in (objects, uploads)]
    merge(objects, obj("a", data(b"1" * 16, 10, 100)), obj("b", data(b"2" * 16, 10, 5)))
    merge(objects, obj("a", marker(b"3" * 16, 11)))
    merge(uploads, upload("k", b"u1"), index_tombstone(B1, "k", b"u1"))
    for gc in gcs:
        assert asyncio.run(gc.collect()) == 1
    assert objects.tree.count() == 1 and uploads.tree.count() == 0
    assert usage.local(B1) == BucketUsage(1, 5, 0)


class CountedRows(Rows):
    """Rows that count even as tombstones: what a collection must take back."""

    counters: RowCounters | None = None

    def updated(self, tx, old, new, incoming) -> None:
        if self.counters is not None:
            self.counters.changed(tx, old, new)

    def forgotten(self, tx, entry) -> None:
        if self.counters is not None:
            self.counters.changed(tx, entry, None)


def test_a_collected_row_is_taken_out_of_the_counts(db):
    schema = CountedRows()
    table = Table(schema, db, Here(), ME)
    schema.counters = RowCounters(table, ["rows"], lambda row: (1,))
    asyncio.run(schema.counters.recount())
    gc = TombstoneGc(table, rpc=None, delay_ms=0)
    merge(table, Row("a", 1, 1), Row("b", -1, 1))
    assert schema.counters.get(b"rows") == (2,)
    assert asyncio.run(gc.collect()) == 1
    assert schema.counters.get(b"rows") == (1,)


def test_a_partition_handed_over_takes_its_counts_with_it(db):
    objects, uploads, usage = build(db, LeftReplication())
    merge(objects, obj("a", data(b"1" * 16, 10, 100)), obj("b", data(b"2" * 16, 10, 5), bucket=B2))
    merge(uploads, upload("a", b"u1"))
    assert usage.local(B1) == BucketUsage(1, 100, 1)
    for table in (objects, uploads):
        sync = TableSync(table, NewHolders(), interval=60, progress=Progress())
        asyncio.run(sync.sync_all())
        assert table.tree.count() == 0
    assert usage.local(B1) == BucketUsage() and usage.local(B2) == BucketUsage()
    assert list(usage.objects.items()) == [] and list(usage.uploads.items()) == []


def expected(objects: Table, uploads: Table) -> dict[bytes, BucketUsage]:
    """Usage by scanning every row: what the counters must always equal."""
    found: dict[bytes, BucketUsage] = {}
    for _, raw in objects.tree.range():
        row = objects.decode(raw)
        current = row.current()
        if current is not None:
            was = found.get(row.bucket_id, BucketUsage())
            found[row.bucket_id] = BucketUsage(
                was.objects + 1, was.bytes + current.data_meta.size, was.unfinished_uploads
            )
    for _, raw in uploads.tree.range():
        entry = uploads.decode(raw)
        if not entry.deleted:
            was = found.get(entry.bucket_id, BucketUsage())
            found[entry.bucket_id] = BucketUsage(was.objects, was.bytes, was.unfinished_uploads + 1)
    return found


def counted(usage: Usage) -> dict[bytes, BucketUsage]:
    buckets = {b for b, _ in usage.objects.items()} | {b for b, _ in usage.uploads.items()}
    return {b: usage.local(b) for b in buckets}


def random_writes(rng: random.Random, objects: Table, uploads: Table, count: int, clock: list):
    buckets = [bytes([i]) * 32 for i in range(1, 6)]
    for _ in range(count):
        clock[0] += 1
        bucket, key = rng.choice(buckets), f"k{rng.randrange(30)}"
        choice = rng.random()
        uuid = rng.randbytes(16)
        if choice < 0.5:
            version = data(uuid, clock[0] - rng.randrange(3), rng.randrange(1, 10_000))
        elif choice < 0.65:
            version = marker(uuid, clock[0])
        elif choice < 0.75:
            version = ObjectVersion(uuid, clock[0], rng.choice([UPLOADING, ABORTED]))
        else:
            upload_id = bytes([rng.randrange(4)])
            entry = upload(key, upload_id, bucket)
            if rng.random() < 0.4:
                entry = index_tombstone(bucket, key, upload_id)
            merge(uploads, entry)
            continue
        merge(objects, obj(key, version, bucket=bucket))


def test_the_recount_counts_older_rows_once_while_writes_go_on(db):
    objects, uploads, _ = build(db, counted=False)  # an older version wrote these rows
    rng, clock = random.Random(7), [100]
    random_writes(rng, objects, uploads, 300, clock)
    for table, schema_counters in ((objects, "objects"), (uploads, "uploads")):
        assert table.tree.count() > 20, schema_counters
    _, _, usage = build(db, counted=False)
    objects.schema.usage, uploads.schema.usage = usage.objects, usage.uploads  # type: ignore[attr-defined]
    # Stale figures from before (a counter tree restored by hand) are dropped.
    asyncio.run(db.transact(lambda tx: usage.objects._add(tx, B1, (5, 5))))
    steps = 0
    while not (usage.objects.recounted() and usage.uploads.recounted()):
        for counters in (usage.objects, usage.uploads):
            asyncio.run(db.transact(lambda tx, c=counters: c.recount_batch(tx, limit=7)))
        random_writes(rng, objects, uploads, 5, clock)  # before and past the cursor
        steps += 1
    assert steps > 3  # the writes did fall between batches
    random_writes(rng, objects, uploads, 100, clock)
    assert counted(usage) == expected(objects, uploads)
    assert usage.objects.state.get(b"recount") == DONE


def test_counters_follow_random_writes_exactly(db):
    objects, uploads, usage = build(db)
    random_writes(random.Random(11), objects, uploads, 400, [100])
    assert counted(usage) == expected(objects, uploads)
    assert counted(usage)  # something was counted
