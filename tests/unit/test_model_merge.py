"""CRDT laws of the model's rows: merges are commutative, associative, idempotent."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from granary.model.block_ref import BlockRef
from granary.model.lock import COMPLIANCE, GOVERNANCE, Retention
from granary.model.mpu import MpuPart, MultipartUpload
from granary.model.object import (
    ABORTED,
    BLOCKS,
    COMPLETE,
    DELETE_MARKER,
    DELETED,
    INLINE,
    UPLOADING,
    Object,
    ObjectMeta,
    ObjectVersion,
)
from granary.model.version import VersionBlock, VersionHeader
from granary.util.crdt import Lww

UUIDS = [bytes([i]) * 16 for i in range(4)]

metas = st.builds(
    ObjectMeta,
    size=st.integers(0, 10),
    etag=st.sampled_from(["a", "b"]),
    headers=st.just([]),
)


tag_registers = st.builds(
    Lww,
    ts=st.integers(0, 3),
    value=st.sampled_from([[], [("a", "1")], [("a", "2"), ("b", "")]]),
)


retentions = st.builds(
    Retention,
    mode=st.sampled_from(["", GOVERNANCE, COMPLIANCE]),
    until_ms=st.integers(0, 4),
    ts=st.integers(0, 4),
)


@st.composite
def object_versions(draw) -> ObjectVersion:
    state = draw(st.sampled_from([UPLOADING, COMPLETE, ABORTED, DELETED]))
    kind = draw(st.sampled_from([INLINE, BLOCKS, DELETE_MARKER]))
    uuid = draw(st.sampled_from(UUIDS))
    return ObjectVersion(
        uuid=uuid,
        timestamp=draw(st.integers(1, 5)),
        state=state,
        multipart=draw(st.booleans()),
        kind=kind,
        meta=draw(metas) if state == COMPLETE and kind != DELETE_MARKER else None,
        tags=draw(tag_registers),
        # A version is null or not for good: every copy of it says the same.
        null=uuid in UUIDS[:2],
        retention=draw(retentions),
        legal_hold=draw(st.builds(Lww, ts=st.integers(0, 3), value=st.booleans())),
    )


objects = st.builds(
    Object,
    bucket_id=st.just(b"b" * 16),
    key=st.just("k"),
    versions=st.lists(object_versions(), min_size=1, max_size=4).map(
        lambda vs: Object(b"b" * 16, "k", vs[:1]).merge(Object(b"b" * 16, "k", vs)).versions
    ),
)

headers = st.builds(VersionHeader, uuid=st.just(UUIDS[0]), deleted=st.booleans())

version_blocks = st.builds(
    VersionBlock,
    uuid=st.just(UUIDS[0]),
    part_number=st.just(1),
    offset=st.just(0),
    hash=st.sampled_from([b"x" * 32, b"y" * 32]),
    size=st.integers(1, 3),
)

uploads = st.builds(
    MultipartUpload,
    upload_id=st.just(UUIDS[1]),
    timestamp=st.integers(1, 3),
    bucket_id=st.just(b"b" * 16),
    key=st.just("k"),
    deleted=st.booleans(),
    parts=st.lists(
        st.builds(
            MpuPart,
            part_number=st.integers(1, 3),
            timestamp=st.integers(1, 2),
            version=st.sampled_from(UUIDS),
            etag=st.sampled_from(["e1", "e2"]),
            size=st.integers(0, 5),
        ),
        max_size=3,
    ).map(
        # A merged row keeps one upload per part number (the winner); a row
        # from 0.3 with several is normalised by its first merge.
        lambda ps: (
            MultipartUpload(UUIDS[1], 1, b"b" * 16, "k", parts=ps)
            .merge(MultipartUpload(UUIDS[1], 1, b"b" * 16, "k"))
            .parts
        )
    ),
)

block_refs = st.builds(
    BlockRef, block=st.just(b"h" * 32), version=st.just(UUIDS[0]), deleted=st.booleans()
)


def check_laws(a, b, c) -> None:
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(a) == a
    merged = a.merge(b)
    assert merged.merge(b) == merged


@given(objects, objects, objects)
def test_object_merge_laws(a, b, c):
    check_laws(a, b, c)


@given(retentions, retentions, retentions)
def test_retention_merge_laws(a, b, c):
    check_laws(a, b, c)


@given(retentions, retentions)
def test_a_merge_never_shortens_compliance_retention(a, b):
    merged = a.merge(b)
    for side in (a, b):
        if side.mode == COMPLIANCE:
            assert merged.mode == COMPLIANCE and merged.until_ms >= side.until_ms


@given(headers, headers, headers)
def test_version_header_merge_laws(a, b, c):
    check_laws(a, b, c)


@given(version_blocks, version_blocks, version_blocks)
def test_version_block_merge_laws(a, b, c):
    check_laws(a, b, c)


@given(uploads, uploads, uploads)
def test_multipart_upload_merge_laws(a, b, c):
    check_laws(a, b, c)


@given(block_refs, block_refs, block_refs)
def test_block_ref_merge_laws(a, b, c):
    check_laws(a, b, c)


def _version(uuid, ts, state, **fields) -> ObjectVersion:
    return ObjectVersion(uuid, ts, state, **fields)


def test_newest_complete_version_wins_and_older_ones_are_dropped():
    old = _version(UUIDS[0], 1, COMPLETE, meta=ObjectMeta(1, "a", []))
    new = _version(UUIDS[1], 2, COMPLETE, meta=ObjectMeta(2, "b", []))
    merged = Object(b"b", "k", [old]).merge(Object(b"b", "k", [new]))
    assert merged.versions == [new]
    assert merged.current() == new


def test_delete_marker_hides_the_object():
    data = _version(UUIDS[0], 1, COMPLETE, meta=ObjectMeta(1, "a", []))
    marker = _version(UUIDS[1], 2, COMPLETE, kind=DELETE_MARKER)
    merged = Object(b"b", "k", [data]).merge(Object(b"b", "k", [marker]))
    assert merged.current() is None
    assert merged.is_tombstone()


def test_upload_completing_last_wins_over_an_earlier_overwrite():
    upload = _version(UUIDS[0], 1, UPLOADING, multipart=True)
    put = _version(UUIDS[1], 2, COMPLETE, meta=ObjectMeta(1, "a", []))
    merged = Object(b"b", "k", [upload]).merge(Object(b"b", "k", [put]))
    assert merged.versions == [put]
    completed = _version(UUIDS[0], 3, COMPLETE, multipart=True, meta=ObjectMeta(5, "c-1", []))
    final = merged.merge(Object(b"b", "k", [completed]))
    assert final.versions == [completed]
    assert final.current() == completed


def test_complete_is_final():
    complete = _version(UUIDS[0], 1, COMPLETE, meta=ObjectMeta(1, "a", []))
    aborted = _version(UUIDS[0], 1, ABORTED)
    assert complete.merge(aborted) == complete


def test_aborted_wins_over_uploading():
    uploading = _version(UUIDS[0], 1, UPLOADING)
    aborted = _version(UUIDS[0], 1, ABORTED)
    assert uploading.merge(aborted) == aborted


def test_deleted_version_stays_deleted():
    assert VersionHeader(UUIDS[0], deleted=True).merge(VersionHeader(UUIDS[0])).deleted


def test_the_latest_tag_write_wins_whatever_the_encodings():
    version = ObjectVersion(UUIDS[0], 1, COMPLETE, kind=INLINE, meta=ObjectMeta(1, "a", []))
    later = replace(version, tags=Lww(5, [("a", "1")]))
    earlier_but_larger = replace(version, tags=Lww(3, [("z", "9" * 50)]))
    assert later.merge(earlier_but_larger) == later == earlier_but_larger.merge(later)


def _row(*versions: ObjectVersion) -> Object:
    return Object(b"b", "k", []).merge(Object(b"b", "k", list(versions)))


def _data(uuid: bytes, ts: int, *, null: bool) -> ObjectVersion:
    return _version(uuid, ts, COMPLETE, kind=INLINE, meta=ObjectMeta(ts, "e", []), null=null)


def test_every_versioned_version_is_kept_and_the_newest_is_current():
    v1, v2, v3 = (_data(UUIDS[i], i + 1, null=False) for i in range(3))
    row = _row(v3, v1, v2)
    assert row.versions == [v1, v2, v3]
    assert row.current() == v3
    assert [v.version_id for v in row.listed()] == [UUIDS[2].hex(), UUIDS[1].hex(), UUIDS[0].hex()]


def test_a_null_version_replaces_only_the_older_null_version():
    old_null = _data(UUIDS[0], 1, null=True)
    versioned = _data(UUIDS[1], 2, null=False)
    new_null = _data(UUIDS[2], 3, null=True)
    row = _row(old_null, versioned, new_null)
    assert row.versions == [versioned, new_null]
    assert row.find("null") == new_null
    assert row.find(UUIDS[1].hex()) == versioned


def test_a_version_deleted_by_id_stays_deleted_and_the_one_before_is_current():
    v1, v2 = _data(UUIDS[0], 1, null=False), _data(UUIDS[1], 2, null=False)
    row = _row(v1, v2).merge(_row(v2.deleted()))
    assert row.current() == v1
    assert row.find(UUIDS[1].hex()) is None
    stale = _row(v1, v2)  # a replica that missed the deletion
    assert row.merge(stale) == stale.merge(row) == row
    assert not row.is_tombstone()
    assert _row(v1.deleted(), v2.deleted()).is_tombstone()


def test_a_versioned_delete_marker_is_listed_and_not_a_tombstone():
    data = _data(UUIDS[0], 1, null=False)
    marker = _version(UUIDS[1], 2, COMPLETE, kind=DELETE_MARKER, null=False)
    row = _row(data, marker)
    assert row.current() is None and row.newest() == marker
    assert row.listed() == [marker, data]
    assert not _row(marker).is_tombstone()
    null_marker = _version(UUIDS[2], 3, COMPLETE, kind=DELETE_MARKER)
    assert _row(null_marker).listed() == [] and _row(null_marker).is_tombstone()


def test_rows_written_before_versions_decode_as_null_versions():
    """A 0.6 row: versions had eight fields (no `null`)."""
    old_version = [UUIDS[0], 7, COMPLETE, False, INLINE, [1, "e", []], b"x", None, [0, []]]
    raw = msgspec.msgpack.encode([b"b", "k", [old_version]])
    row = msgspec.msgpack.decode(raw, type=Object)
    assert row.current() is not None and row.current().null
    assert row.find("null") == row.current()
