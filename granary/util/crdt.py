"""Conflict-free replicated values (CRDTs) that table entries are built from.

Replicas of an entry are reconciled with `merge`, which is commutative,
associative and idempotent, so replicas that have seen the same updates hold
the same value whatever the order they saw them in. `merge` returns a value
and never changes its inputs; the Structs are frozen, and may return one of
the inputs itself.

All types are msgspec Structs encoded as msgpack arrays. Decode them with
concrete type parameters, e.g. `msgspec.msgpack.decode(data, type=Lww[str])`.
Ties between equal timestamps are broken by comparing the values' msgpack
encodings (the larger wins), the same bytes that replicas store and compare in
Merkle trees, so replicas converge byte for byte. Values must therefore encode
the same way in every process: no sets, whose order varies between processes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import pairwise
from operator import attrgetter
from typing import Any, Generic, Protocol, Self, TypeVar

import msgspec


class Mergeable(Protocol):
    def merge(self, other: Self, /) -> Self: ...


class _Ordered(Protocol):
    def __gt__(self, other: Any, /) -> bool: ...


T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
M = TypeVar("M", bound=Mergeable)
Ord = TypeVar("Ord", bound=_Ordered)

_encoder = msgspec.msgpack.Encoder()
_entry_key = attrgetter("key")


def max_merge(a: Ord, b: Ord) -> Ord:
    """Merge for totally ordered plain values: the larger one."""
    return b if b > a else a


def _first_wins(ts_a: int, value_a: object, ts_b: int, value_b: object) -> bool:
    """The last-writer-wins rule: later timestamp, then the larger encoding of the value."""
    if ts_a != ts_b:
        return ts_a > ts_b
    return _encoder.encode(value_a) >= _encoder.encode(value_b)


class Lww(msgspec.Struct, Generic[T], frozen=True, array_like=True):
    """A register: the value of the write with the latest timestamp (in ms)."""

    ts: int
    value: T

    def update(self, value: T, now_ms: int) -> Self:
        """A write of `value`, stamped after this one even if the clock is behind."""
        return msgspec.structs.replace(self, ts=max(now_ms, self.ts + 1), value=value)

    def merge(self, other: Self) -> Self:
        return self if _first_wins(self.ts, self.value, other.ts, other.value) else other


class Bool(msgspec.Struct, frozen=True, array_like=True):
    """A flag that, once true, stays true."""

    value: bool = False

    def merge(self, other: Self) -> Self:
        return self if self.value or not other.value else other


class Deletable(msgspec.Struct, Generic[M], frozen=True, array_like=True):
    """A mergeable value, or a tombstone; once deleted it stays deleted."""

    deleted: bool = False
    value: M | None = None

    def __post_init__(self) -> None:
        if self.deleted == (self.value is not None):
            raise ValueError("a Deletable holds a value exactly when it is not deleted")

    @classmethod
    def present(cls, value: M) -> Self:
        return cls(deleted=False, value=value)

    @classmethod
    def tombstone(cls) -> Self:
        return cls(deleted=True, value=None)

    def merge(self, other: Self) -> Self:
        if self.deleted:
            return self
        if other.deleted:
            return other
        assert self.value is not None and other.value is not None
        return msgspec.structs.replace(self, value=self.value.merge(other.value))


class LwwMapEntry(msgspec.Struct, Generic[K, V], frozen=True, array_like=True):
    key: K
    ts: int
    value: V


class LwwMap(msgspec.Struct, Generic[K, V], frozen=True, array_like=True):
    """A map whose every key is a last-writer-wins register.

    Entries stay sorted by key, so equal maps encode to equal bytes. Keys are
    never removed: to delete, set the value None (type the map `LwwMap[K, V | None]`).
    """

    entries: tuple[LwwMapEntry[K, V], ...] = ()

    def __post_init__(self) -> None:
        _check_sorted(self.entries)

    def get(self, key: K, default: V | None = None) -> V | None:
        entry = self.entry(key)
        return default if entry is None else entry.value

    def entry(self, key: K) -> LwwMapEntry[K, V] | None:
        return _find(self.entries, key)

    def set(self, key: K, value: V, now_ms: int) -> Self:
        """This map with `key` set to `value`, stamped after any earlier write of `key`."""
        old = self.entry(key)
        ts = now_ms if old is None else max(now_ms, old.ts + 1)
        return msgspec.structs.replace(
            self, entries=_union(self.entries, (LwwMapEntry(key, ts, value),), _newer_entry)
        )

    def items(self) -> Iterator[tuple[K, V]]:
        """(key, value) pairs in key order, including those set to None."""
        return ((entry.key, entry.value) for entry in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def merge(self, other: Self) -> Self:
        return msgspec.structs.replace(
            self, entries=_union(self.entries, other.entries, _newer_entry)
        )


class CrdtMapEntry(msgspec.Struct, Generic[K, M], frozen=True, array_like=True):
    key: K
    value: M


class CrdtMap(msgspec.Struct, Generic[K, M], frozen=True, array_like=True):
    """A map of mergeable values: the union of keys, values of a shared key merged."""

    entries: tuple[CrdtMapEntry[K, M], ...] = ()

    def __post_init__(self) -> None:
        _check_sorted(self.entries)

    def get(self, key: K) -> M | None:
        entry = _find(self.entries, key)
        return None if entry is None else entry.value

    def put(self, key: K, value: M) -> Self:
        """This map with `value` merged into the value of `key`."""
        return msgspec.structs.replace(
            self, entries=_union(self.entries, (CrdtMapEntry(key, value),), _merged_entry)
        )

    def items(self) -> Iterator[tuple[K, M]]:
        return ((entry.key, entry.value) for entry in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def merge(self, other: Self) -> Self:
        return msgspec.structs.replace(
            self, entries=_union(self.entries, other.entries, _merged_entry)
        )


def _newer_entry(a: LwwMapEntry[K, V], b: LwwMapEntry[K, V]) -> LwwMapEntry[K, V]:
    return a if _first_wins(a.ts, a.value, b.ts, b.value) else b


def _merged_entry(a: CrdtMapEntry[K, M], b: CrdtMapEntry[K, M]) -> CrdtMapEntry[K, M]:
    return CrdtMapEntry(a.key, a.value.merge(b.value))


_E = TypeVar("_E")


def _union(
    left: tuple[_E, ...], right: tuple[_E, ...], combine: Callable[[_E, _E], _E]
) -> tuple[_E, ...]:
    """Merge two key-sorted entry tuples, combining the entries of a shared key."""
    if not right:
        return left
    if not left:
        return right
    out: list[_E] = []
    i = j = 0
    while i < len(left) and j < len(right):
        a, b = left[i], right[j]
        key_a, key_b = _entry_key(a), _entry_key(b)
        if key_a < key_b:
            out.append(a)
            i += 1
        elif key_b < key_a:
            out.append(b)
            j += 1
        else:
            out.append(combine(a, b))
            i += 1
            j += 1
    out.extend(left[i:])
    out.extend(right[j:])
    return tuple(out)


def _find(entries: tuple[_E, ...], key: Any) -> _E | None:
    index = bisect_left(entries, key, key=_entry_key)
    if index < len(entries) and _entry_key(entries[index]) == key:
        return entries[index]
    return None


def _check_sorted(entries: tuple[Any, ...]) -> None:
    """Reject decoded maps whose entries are unsorted or repeat a key."""
    for previous, current in pairwise(entries):
        if not previous.key < current.key:
            raise ValueError("map entries must be sorted by key, without duplicates")
