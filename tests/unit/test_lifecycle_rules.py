"""What lifecycle rules make of an object row (granary/model/lifecycle.py)."""

from __future__ import annotations

from granary.model.lifecycle import (
    DeleteVersion,
    Expire,
    LifecycleFilter,
    LifecycleRule,
    actions_for,
    day_boundary_after,
    upload_due,
)
from granary.model.object import COMPLETE, DELETE_MARKER, INLINE, Object, ObjectMeta, ObjectVersion
from granary.util.crdt import Lww

DAY = 1000


def version(n: int, ts: int, *, marker: bool = False, size: int = 10, tags=()) -> ObjectVersion:
    if marker:
        return ObjectVersion(bytes([n]) * 16, ts, COMPLETE, kind=DELETE_MARKER, null=False)
    return ObjectVersion(
        bytes([n]) * 16,
        ts,
        COMPLETE,
        kind=INLINE,
        meta=ObjectMeta(size, "e", []),
        inline=b"x",
        tags=Lww(ts, list(tags)),
        null=False,
    )


def row(key: str, *versions: ObjectVersion) -> Object:
    return Object(b"b", key, []).merge(Object(b"b", key, list(versions)))


def rule(**fields) -> LifecycleRule:
    return LifecycleRule(id="r", enabled=True, **fields)


def test_expiry_counts_whole_days_from_creation_to_the_next_day_boundary():
    assert day_boundary_after(1500, DAY) == 2000 and day_boundary_after(2000, DAY) == 2000
    current = version(1, 500)
    expire = rule(expiration_days=1)
    assert actions_for(row("k", current), [expire], 1999, DAY) == []
    assert actions_for(row("k", current), [expire], 2000, DAY) == [Expire(current)]
    disabled = LifecycleRule(id="r", enabled=False, expiration_days=1)
    assert actions_for(row("k", current), [disabled], 10**9, DAY) == []


def test_filters_by_prefix_tags_and_size():
    tagged = version(1, 0, tags=[("a", "1")], size=100)
    for matching, wanted in (
        (LifecycleFilter(prefix="logs/"), False),
        (LifecycleFilter(tags=[("a", "1")]), True),
        (LifecycleFilter(tags=[("a", "2")]), False),
        (LifecycleFilter(size_greater_than=99, size_less_than=101), True),
        (LifecycleFilter(size_less_than=100), False),
    ):
        found = actions_for(
            row("k", tagged), [rule(expiration_days=1, filter=matching)], 10**6, DAY
        )
        assert bool(found) is wanted, matching


def test_noncurrent_versions_go_days_after_their_successor_keeping_the_newest():
    v1, v2, v3, v4 = (version(i, i * DAY) for i in range(1, 5))
    keep_one = rule(noncurrent_days=1, newer_noncurrent=1)
    # v3 became noncurrent at 4 * DAY (v4 written), v2 at 3 * DAY, v1 at 2 * DAY.
    found = actions_for(row("k", v1, v2, v3, v4), [keep_one], 10 * DAY, DAY)
    assert found == [DeleteVersion(v2), DeleteVersion(v1)]
    early = actions_for(row("k", v1, v2, v3, v4), [rule(noncurrent_days=1)], 3 * DAY, DAY)
    assert early == [DeleteVersion(v1)]


def test_a_lone_delete_marker_goes_and_one_with_versions_behind_it_stays():
    marker = version(9, 5, marker=True)
    cleanup = rule(expired_object_delete_marker=True)
    assert actions_for(row("k", marker), [cleanup], 10, DAY) == [DeleteVersion(marker)]
    assert actions_for(row("k", version(1, 1), marker), [cleanup], 10, DAY) == []


def test_uploads_are_aborted_days_after_they_started():
    abort = [rule(abort_upload_days=2, filter=LifecycleFilter(prefix="tmp/"))]
    assert upload_due(abort, "tmp/x", 0, 2 * DAY, DAY)
    assert not upload_due(abort, "tmp/x", 0, 2 * DAY - 1, DAY)
    assert not upload_due(abort, "other", 0, 10 * DAY, DAY)
