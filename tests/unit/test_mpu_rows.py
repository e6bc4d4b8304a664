"""Multipart uploads cost O(1) per key: open uploads stay out of the object row, a
re-uploaded part replaces the previous upload (whose version is released), and the
upload index lists uploads by key, then by initiation time.

The model runs on one node over SQLite (real tables, a real block manager); the
insert-queue workers do not run, so the cascades a merge queues can be read back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import pytest
from block_fakes import FixedDistances, FixedReplication, OneNodeReplication, block_managers

from granary.block.holders import BlockHolders
from granary.model.buckets import Bucket, BucketParams
from granary.model.mpu import MpuPart, MultipartUpload
from granary.model.mpu_index import index_sort_key
from granary.model.multipart import Multipart
from granary.model.object import ABORTED, UPLOADING, Object, ObjectMeta, ObjectVersion
from granary.model.objects import Objects
from granary.model.store import Model
from granary.model.version import VersionHeader
from granary.util.crdt import Deletable, LwwMap

ME = b"m" * 32
BUCKET = b"b" * 16
KEY = "photos/cat.jpg"
MANY = 200


class NoPeers:
    """The network of a node alone: it serves nothing and has no one to call."""

    def endpoint(self, name: str, handler: object) -> None:
        pass


@pytest.fixture
def model(tmp_path: Path) -> Iterator[Model]:
    with block_managers(tmp_path) as make:
        blocks = make(
            NoPeers(), BlockHolders(FixedReplication([ME])), FixedDistances([ME]), ME, gc_grace_ms=0
        )
        executor = ThreadPoolExecutor(1)
        model = Model(
            blocks.db, blocks, OneNodeReplication(ME), OneNodeReplication(ME), ME, executor
        )
        live = Bucket(BUCKET, Deletable(deleted=False, value=BucketParams(0, LwwMap())))
        asyncio.run(model.buckets.local_merge([live]))  # writes check that their bucket lives
        yield model
        executor.shutdown()


def row_size(model: Model) -> int:
    row = model.objects.local_get(BUCKET, KEY.encode())
    return len(model.objects.encode(row))


def test_open_uploads_leave_the_object_row_alone(model: Model) -> None:
    objects = Objects(model)
    multipart = Multipart(objects)

    async def scenario() -> tuple[int, int]:
        await objects.put_inline(BUCKET, KEY, ObjectMeta(1, "e" * 32, []), b"x")
        before = row_size(model)
        for _ in range(MANY):
            await multipart.create(BUCKET, KEY, [])
        return before, row_size(model)

    before, after = asyncio.run(scenario())
    assert after == before


def test_uploads_of_a_key_list_by_initiation_time(model: Model) -> None:
    multipart = Multipart(Objects(model))

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        created = [(await multipart.create(BUCKET, KEY, [])).upload_id for _ in range(MANY)]
        listed = await multipart.list_uploads(BUCKET, None, 1000)
        return created, [entry.upload_id for entry in listed.entries]

    created, listed = asyncio.run(scenario())
    assert listed == created


def test_keys_sort_in_key_order_whatever_they_contain() -> None:
    keys = sorted(["a", "a\x00", "a\x00b", "a\x01", "a/b", "ab", "é"])
    upload_ids = [b"\x00" * 16, b"\xff" * 16]
    entries = [(key, upload_id) for key in keys for upload_id in upload_ids]
    assert sorted(entries, key=lambda e: index_sort_key(*e)) == entries


def test_a_reuploaded_part_replaces_the_previous_upload(model: Model) -> None:
    multipart = Multipart(Objects(model))

    async def scenario() -> tuple[MultipartUpload, list[int], list[bytes]]:
        upload = await multipart.create(BUCKET, KEY, [])
        sizes, versions = [], []
        for attempt in range(MANY):
            current = await multipart.get(upload.upload_id)  # as each UploadPart reads it
            part = await multipart.begin_part(current)
            await multipart.record_part(current, 1, part, f"{attempt:032x}", 10, None)
            versions.append(part.uuid)
            row = model.uploads.local_get(upload.upload_id, b"")
            sizes.append(len(model.uploads.encode(row)))
        return row, sizes, versions

    row, sizes, versions = asyncio.run(scenario())
    assert [(p.part_number, p.version, p.etag) for p in row.parts] == [
        (1, versions[-1], f"{MANY - 1:032x}")
    ]
    assert len(set(sizes)) == 1
    released = {
        entry.uuid
        for entry in map(
            model.versions.decode, (raw for _, raw in model.versions.queue_tree.range())
        )
        if isinstance(entry, VersionHeader) and entry.deleted
    }
    assert released == set(versions[:-1])


def test_the_part_recorded_last_wins_whatever_arrives_first() -> None:
    upload = MultipartUpload(b"u" * 16, 1, BUCKET, KEY)
    first = MpuPart(1, 10, b"a" * 16, "etag-a", 8)
    resent = MpuPart(1, 11, b"b" * 16, "etag-b", 8)
    one_way = upload.merge(MultipartUpload(b"u" * 16, 1, BUCKET, KEY, parts=[first]))
    one_way = one_way.merge(MultipartUpload(b"u" * 16, 1, BUCKET, KEY, parts=[resent]))
    other_way = upload.merge(MultipartUpload(b"u" * 16, 1, BUCKET, KEY, parts=[resent]))
    other_way = other_way.merge(MultipartUpload(b"u" * 16, 1, BUCKET, KEY, parts=[first]))
    assert one_way.parts == other_way.parts == [resent]


def test_uploads_of_0_3_are_indexed_and_abort_as_before(model: Model) -> None:
    """A 0.3 upload: an upload row without the index-era field, an Uploading version
    in the object row, and no index entry (a later write of the key hid it)."""
    objects = Objects(model)
    multipart = Multipart(objects)
    upload_id = b"\x7f" * 16
    row_0_3 = msgspec.msgpack.encode([upload_id, 5, BUCKET, KEY, False, [], []])
    upload = msgspec.msgpack.decode(row_0_3, type=MultipartUpload)

    async def scenario() -> tuple[list[bytes], list[bytes], Object | None]:
        await model.uploads.insert(upload)
        await model.objects.insert(
            Object(BUCKET, KEY, [ObjectVersion(upload_id, 5, UPLOADING, multipart=True)])
        )
        assert (await multipart.list_uploads(BUCKET, None, 10)).entries == []
        assert await multipart.index_legacy_uploads() == 1
        listed = [e.upload_id for e in (await multipart.list_uploads(BUCKET, None, 10)).entries]
        await multipart.abort(await multipart.get(upload_id))
        after = [e.upload_id for e in (await multipart.list_uploads(BUCKET, None, 10)).entries]
        return listed, after, await objects.get(BUCKET, KEY)

    listed, after, row = asyncio.run(scenario())
    assert listed == [upload_id]
    assert after == []
    assert [v.state for v in row.versions] == [ABORTED]
