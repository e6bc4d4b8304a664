"""What a replicated table stores: its entry type and how entries merge."""

from __future__ import annotations

from collections.abc import Callable
from types import UnionType
from typing import Generic, Protocol, Self, TypeVar

from granary.db.base import Tx


class Entry(Protocol):
    """A CRDT row: merging is commutative, associative and idempotent."""

    def merge(self, other: Self) -> Self: ...


E = TypeVar("E", bound=Entry)


class TableSchema(Generic[E]):
    """Describes one table. Subclasses set `name` and `entry_type`."""

    name: str
    entry_type: type[E] | UnionType
    """The entry class, or a union of tagged classes (msgspec decodes either)."""
    filters: dict[str, Callable[[E], bool]] = {}
    """Named row filters for range reads; named so other nodes can apply them too."""
    collect_tombstones: bool = True
    """Whether tombstone rows are eventually forgotten (see table/gc.py)."""

    def partition_key(self, entry: E) -> bytes:
        raise NotImplementedError

    def sort_key(self, entry: E) -> bytes:
        raise NotImplementedError

    def is_tombstone(self, entry: E) -> bool:
        """True when the entry only records a deletion."""
        return False

    def updated(self, tx: Tx, old: E | None, new: E, incoming: E) -> None:
        """Hook run inside the transaction that merged `incoming` into a local row.

        Called when the row changed, or when part of `incoming` was merged
        away. Used for cascades (object -> version -> block_ref -> refcount).
        """

    def forgotten(self, tx: Tx, entry: E) -> None:
        """Hook run inside the transaction that dropped a local row without a merge.

        Either the row was handed over to the partition's new holders
        (table/sync.py) or it was a tombstone every holder had, collected by
        table/gc.py. Either way the row lives on elsewhere or means nothing
        any more, so nothing cascades; only state this node derived from it
        (a block's reference count, the local usage counters) is let go.
        """
