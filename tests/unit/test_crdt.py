"""CRDT primitives: merge laws (hypothesis), semantics, and msgpack round trips."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from granary.util.crdt import (
    Bool,
    CrdtMap,
    CrdtMapEntry,
    Deletable,
    Lww,
    LwwMap,
    LwwMapEntry,
    max_merge,
)

# Few timestamps and few keys, so that ties and shared keys are common.
TIMESTAMPS = st.integers(0, 3)
MAP_KEYS = st.sampled_from(["a", "b", "c", "d"])
SMALL_TEXT = st.text(alphabet="xyz", max_size=2)


def lww_of(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Lww[Any]]:
    return st.builds(Lww, TIMESTAMPS, values)


def lww_maps(values: st.SearchStrategy[Any]) -> st.SearchStrategy[LwwMap[str, Any]]:
    return st.dictionaries(MAP_KEYS, st.tuples(TIMESTAMPS, values)).map(
        lambda d: LwwMap(tuple(LwwMapEntry(k, ts, v) for k, (ts, v) in sorted(d.items())))
    )


def crdt_maps(values: st.SearchStrategy[Any]) -> st.SearchStrategy[CrdtMap[str, Any]]:
    return st.dictionaries(MAP_KEYS, values).map(
        lambda d: CrdtMap(tuple(CrdtMapEntry(k, v) for k, v in sorted(d.items())))
    )


def deletables(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Deletable[Any]]:
    return st.one_of(st.just(Deletable.tombstone()), values.map(Deletable.present))


LWW_VALUES = st.one_of(st.none(), st.integers(-2, 2), SMALL_TEXT)

# (name, strategy, concrete type used to decode it)
CASES = [
    ("lww", lww_of(LWW_VALUES), Lww[int | str | None]),
    ("lww_struct_value", lww_of(st.builds(Bool, st.booleans())), Lww[Bool]),
    ("bool", st.builds(Bool, st.booleans()), Bool),
    ("lww_map", lww_maps(st.none() | st.integers(0, 2)), LwwMap[str, int | None]),
    ("deletable", deletables(lww_of(SMALL_TEXT)), Deletable[Lww[str]]),
    ("crdt_map_of_lww", crdt_maps(lww_of(st.integers(0, 2))), CrdtMap[str, Lww[int]]),
    (
        "crdt_map_of_deletable",
        crdt_maps(deletables(lww_maps(SMALL_TEXT))),
        CrdtMap[str, Deletable[LwwMap[str, str]]],
    ),
]
CASE_IDS = [name for name, _, _ in CASES]


def encoded(value: Any) -> bytes:
    return msgspec.msgpack.encode(value)


@pytest.mark.parametrize(("name", "values", "type_"), CASES, ids=CASE_IDS)
@given(data=st.data())
def test_merge_laws(
    name: str, values: st.SearchStrategy[Any], type_: Any, data: st.DataObject
) -> None:
    a, b, c = data.draw(values), data.draw(values), data.draw(values)
    before = [encoded(x) for x in (a, b, c)]
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(a) == a
    assert a.merge(b).merge(b) == a.merge(b)
    assert [encoded(x) for x in (a, b, c)] == before  # no input was changed
    # Replicas must also agree byte for byte, or Merkle trees never converge.
    assert encoded(a.merge(b)) == encoded(b.merge(a))


@pytest.mark.parametrize(("name", "values", "type_"), CASES, ids=CASE_IDS)
@given(data=st.data())
def test_round_trip(
    name: str, values: st.SearchStrategy[Any], type_: Any, data: st.DataObject
) -> None:
    value = data.draw(values)
    decoded = msgspec.msgpack.decode(encoded(value), type=type_)
    assert decoded == value
    assert type(decoded) is type(value)


@given(st.integers(), st.integers())
def test_max_merge_laws(a: int, b: int) -> None:
    assert max_merge(a, b) == max_merge(b, a) == max(a, b)
    assert max_merge(a, a) == a


def test_max_merge_of_tuples() -> None:
    assert max_merge((1, "b"), (1, "a")) == (1, "b")


def test_lww_later_timestamp_wins() -> None:
    old, new = Lww(5, "old"), Lww(6, "new")
    assert old.merge(new) is new
    assert new.merge(old) is new


def test_lww_tie_is_broken_by_the_larger_encoding() -> None:
    a, b = Lww(5, "aaa"), Lww(5, "b")
    winner = a if encoded("aaa") > encoded("b") else b
    assert a.merge(b) is winner
    assert b.merge(a) is winner


def test_lww_tie_between_equal_values_of_different_encodings_converges() -> None:
    a, b = Lww(1, {"x": 1, "y": 2}), Lww(1, {"y": 2, "x": 1})
    assert encoded(a.merge(b)) == encoded(b.merge(a))


@pytest.mark.parametrize(("now", "expected_ts"), [(100, 100), (10, 51), (50, 51), (51, 51)])
def test_lww_update_never_goes_back_in_time(now: int, expected_ts: int) -> None:
    current = Lww(50, "v")
    updated = current.update("w", now)
    assert updated == Lww(expected_ts, "w")
    assert current.merge(updated) is updated
    assert current == Lww(50, "v")


def test_lww_map_set_get_items() -> None:
    empty: LwwMap[str, int | None] = LwwMap()
    m = empty.set("b", 2, 10).set("a", 1, 10).set("c", None, 10)
    assert list(m.items()) == [("a", 1), ("b", 2), ("c", None)]
    assert m.get("a") == 1
    assert m.get("zz") is None
    assert m.get("zz", 7) == 7
    assert len(m) == 3
    assert len(empty) == 0


def test_lww_map_set_is_stamped_after_the_previous_write() -> None:
    m = LwwMap[str, int | None]().set("k", 1, 100)
    later = m.set("k", None, 50)  # clock went backwards: the delete must still win
    assert later.entry("k") == LwwMapEntry("k", 101, None)
    assert m.merge(later).get("k", "missing") is None
    assert m.get("k") == 1


def test_lww_map_merges_per_key() -> None:
    left = LwwMap[str, str]().set("a", "left", 1).set("b", "left", 5)
    right = LwwMap[str, str]().set("a", "right", 2).set("b", "right", 4).set("c", "right", 1)
    merged = left.merge(right)
    assert list(merged.items()) == [("a", "right"), ("b", "left"), ("c", "right")]


def test_maps_reject_unsorted_or_duplicate_entries() -> None:
    unsorted = msgspec.msgpack.encode([[["b", 1, 1], ["a", 1, 1]]])
    duplicate = msgspec.msgpack.encode([[["a", 1, 1], ["a", 2, 2]]])
    for data in (unsorted, duplicate):
        with pytest.raises((ValueError, msgspec.ValidationError)):
            msgspec.msgpack.decode(data, type=LwwMap[str, int])
    with pytest.raises((ValueError, msgspec.ValidationError)):
        msgspec.msgpack.decode(
            msgspec.msgpack.encode([[["b", 1], ["a", 1]]]), type=CrdtMap[str, Bool]
        )


def test_bool_once_true_stays_true() -> None:
    yes, no = Bool(True), Bool(False)
    assert no.merge(yes) == yes
    assert yes.merge(no) == yes
    assert no.merge(no) == no
    assert Bool() == no


def test_deletable_deleted_wins_forever() -> None:
    live = Deletable.present(Lww(1_000, "new"))
    gone = Deletable[Lww[str]].tombstone()
    assert live.merge(gone) == gone
    assert gone.merge(live) == gone
    assert gone.merge(live).merge(Deletable.present(Lww(9_999, "newer"))) == gone


def test_deletable_merges_present_values() -> None:
    a, b = Deletable.present(Lww(1, "a")), Deletable.present(Lww(2, "b"))
    assert a.merge(b) == Deletable.present(Lww(2, "b"))


def test_deletable_rejects_inconsistent_states() -> None:
    with pytest.raises(ValueError):
        Deletable(deleted=True, value=Lww(1, "x"))
    with pytest.raises(ValueError):
        Deletable(deleted=False, value=None)
    with pytest.raises((ValueError, msgspec.ValidationError)):
        msgspec.msgpack.decode(msgspec.msgpack.encode([False, None]), type=Deletable[Lww[str]])


def test_crdt_map_is_a_union_with_merged_values() -> None:
    left = CrdtMap[str, Bool]().put("a", Bool(False)).put("b", Bool(True))
    right = CrdtMap[str, Bool]().put("a", Bool(True)).put("c", Bool(False))
    merged = left.merge(right)
    assert list(merged.items()) == [("a", Bool(True)), ("b", Bool(True)), ("c", Bool(False))]
    assert merged.get("a") == Bool(True)
    assert merged.get("zz") is None
    assert len(merged) == 3
    assert merged.put("a", Bool(False)).get("a") == Bool(True)


def test_values_are_frozen() -> None:
    value = Lww(1, "x")
    with pytest.raises(AttributeError):
        value.ts = 2  # type: ignore[misc]


def test_encoding_is_compact_arrays() -> None:
    assert msgspec.msgpack.decode(encoded(Lww(7, "v"))) == [7, "v"]
    m = LwwMap[str, int]().set("k", 1, 7)
    assert msgspec.msgpack.decode(encoded(m)) == [[["k", 7, 1]]]
