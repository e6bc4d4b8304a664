"""Bucket and alias rows: merge laws with their intents, and rows written before intents."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from granary.model.buckets import (
    Bucket,
    BucketAlias,
    BucketParams,
    Intent,
    Permission,
    binding_intents,
    own_slot,
)
from granary.util.crdt import Deletable, Lww, LwwMap

NODES = [bytes([i]) * 32 for i in range(3)]


def lww_maps(keys, values):
    writes = st.lists(st.tuples(st.sampled_from(keys), values, st.integers(1, 4)), max_size=4)

    def build(items) -> LwwMap:
        built = LwwMap()
        for key, value, ts in items:
            built = built.merge(LwwMap().set(key, value, ts))
        return built

    return writes.map(build)


intents = st.builds(Intent, deadline=st.integers(0, 3), active=st.booleans())
permissions = st.builds(Permission, read=st.booleans(), write=st.booleans(), owner=st.booleans())

params = st.builds(
    BucketParams,
    created=st.integers(1, 3),
    authorized_keys=lww_maps(["k1", "k2"], permissions),
    closing=lww_maps(NODES, intents),
    tags=st.builds(
        Lww, ts=st.integers(0, 3), value=st.sampled_from([None, [], [("k", "v")], [("k", "w")]])
    ),
)
buckets = st.builds(
    Bucket,
    id=st.just(b"b" * 16),
    state=st.one_of(st.builds(Deletable.present, params), st.just(Deletable.tombstone())),
)
aliases = st.builds(
    BucketAlias,
    name=st.just("name"),
    target=st.builds(Lww, ts=st.integers(0, 3), value=st.sampled_from([None, b"b" * 16])),
    claims=lww_maps(NODES, intents),
)


def check_laws(a, b, c) -> None:
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(a) == a


@given(buckets, buckets, buckets)
def test_bucket_merge_laws(a, b, c):
    check_laws(a, b, c)


@given(aliases, aliases, aliases)
def test_alias_merge_laws(a, b, c):
    check_laws(a, b, c)


def test_rows_written_before_intents_decode_with_none_under_way():
    granted = LwwMap().set("k1", Permission(True, True, True), 5)
    old_bucket = msgspec.msgpack.encode([b"b" * 16, [False, [7, granted]]])
    bucket = msgspec.msgpack.decode(old_bucket, type=Bucket)
    assert bucket.params == BucketParams(7, granted)
    assert len(bucket.params.closing) == 0
    old_alias = msgspec.msgpack.encode(["name", [3, b"b" * 16]])
    alias = msgspec.msgpack.decode(old_alias, type=BucketAlias)
    assert alias.target == Lww(3, b"b" * 16)
    assert len(alias.claims) == 0


def test_an_intent_binds_while_active_and_before_its_deadline():
    intents = (
        LwwMap()
        .set(NODES[0], Intent(deadline=100), 1)
        .set(NODES[1], Intent(deadline=100, active=False), 1)
        .set(NODES[2], Intent(deadline=50), 1)
    )
    assert binding_intents(intents, 40) == [NODES[0], NODES[2]]
    assert binding_intents(intents, 40, besides=NODES[0]) == [NODES[2]]
    assert binding_intents(intents, 60) == [NODES[0]]
    assert binding_intents(intents, 100) == []


def test_a_withdrawn_intent_overrides_the_active_one_it_follows():
    active = LwwMap().set(NODES[0], Intent(100), 5)
    withdrawn = active.set(NODES[0], Intent(100, active=False), 5)
    assert binding_intents(active.merge(withdrawn), 0) == []
    assert binding_intents(withdrawn.merge(active), 0) == []


def test_a_slot_written_again_is_stamped_after_its_previous_value():
    others = LwwMap().set(NODES[1], Intent(100), 50)
    first = own_slot(others, NODES[0], Intent(100), 50)
    assert [node for node, _ in first.items()] == [NODES[0]]
    again = own_slot(others.merge(first), NODES[0], Intent(100, active=False), 10)
    assert binding_intents(first.merge(again), 0) == []
    assert again.entry(NODES[0]).ts == 51
