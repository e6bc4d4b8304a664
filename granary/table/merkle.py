"""A two-level summary of a table's rows, for cheap replica comparison.

Rows are grouped by partition (the first byte of their storage key, as on
the ring) and, inside a partition, into 256 hash buckets by a hash of the
whole storage key. Each bucket's digest is the XOR of its rows' digests, so a
write updates one small record in the same transaction that changes the
row, with no tree to rebalance. Two replicas compare the 256 partition
digests, then the bucket digests of the partitions that differ, then the
row digests of the buckets that differ.

A partition can hold any number of rows (all of a bucket's objects share one),
so the row digests are read in bounded pages, never all at once. They come
from a second index tree, ``<table>:merkle_rows``, keyed by (partition,
bucket, storage key) and holding the row's digest, kept in the same
transaction as the row: the rows of some buckets are then ordered range
reads that continue from a cursor, instead of a scan of the whole partition
hashing every row. A row's *position* is its bucket byte followed by its
storage key, the order of that index inside a partition; pages are cut at
positions.

Rows written before that index existed are indexed once, at start, in
bounded transactions on the database's writer thread (`build_row_index`).
Until that is done the index may miss rows, so row digests are refused
(`RowIndexNotReady`) rather than answered wrong or by the old full scan:
anti-entropy with this node waits, and retries, until the index is whole.
A marker in ``local:built_indexes`` records that it was built.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

import blake3

from granary.db.base import Db, Tree, Tx

DIGEST_BYTES = 16
EMPTY = bytes(DIGEST_BYTES)
BUCKETS = 256
DIGEST_PAGE_ROWS = 1000
"""Most row digests in one page. Storage keys are at most 511 bytes, so a page
is also bounded in bytes (under 600 KB encoded)."""
REBUILD_ROWS = 500
"""Rows indexed per transaction while building the row index."""

BUILT_INDEXES_TREE = "local:built_indexes"


class RowIndexNotReady(RuntimeError):
    """The row digest index is still being built for rows older than it."""


def row_digest(key: bytes, value: bytes) -> bytes:
    hasher = blake3.blake3(len(key).to_bytes(2, "big"))
    hasher.update(key)
    hasher.update(value)
    return hasher.digest(DIGEST_BYTES)


def bucket_of(key: bytes) -> int:
    return blake3.blake3(key).digest(1)[0]


def position_of(key: bytes) -> bytes:
    """Where a row sits in its partition's row index: bucket byte + storage key."""
    return bytes([bucket_of(key)]) + key


def after(position: bytes) -> bytes:
    """The smallest position greater than `position` (where the next page starts)."""
    return position + b"\x00"


def xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(DIGEST_BYTES, "big")


@dataclass
class DigestPage:
    """Some row digests of a partition, in position order, and how far they go."""

    rows: list[tuple[bytes, bytes]]
    """(position, row digest); the storage key is ``position[1:]``."""
    horizon: bytes | None
    """The position of the last row if the page stopped early; None: to the end."""


class MerkleIndex:
    """Bucket digests and row digests of one table, kept in their own trees."""

    def __init__(self, db: Db, table_name: str, rows: Tree) -> None:
        self.db = db
        self.rows = rows
        self.tree = db.tree(f"{table_name}:merkle")
        self.row_index = db.tree(f"{table_name}:merkle_rows")
        self._built = db.tree(BUILT_INDEXES_TREE)
        self._marker = self.row_index.name.encode()
        self._build_lock = asyncio.Lock()
        # A table that has no row yet is wholly indexed by every write to come.
        self.rows_indexed = self._built.get(self._marker) is not None or _is_empty(rows)

    def update(self, tx: Tx, key: bytes, old: bytes | None, new: bytes | None) -> None:
        """Account for a row changing from `old` to `new` (None: absent)."""
        change = EMPTY
        if old is not None:
            change = xor(change, row_digest(key, old))
        if new is not None:
            new_digest = row_digest(key, new)
            change = xor(change, new_digest)
        if change == EMPTY:
            return
        slot = bytes([key[0], bucket_of(key)])
        if new is None:
            tx.delete(self.row_index, slot + key)
        else:
            tx.put(self.row_index, slot + key, new_digest)
        current = tx.get(self.tree, slot) or EMPTY
        updated = xor(current, change)
        if updated == EMPTY:
            tx.delete(self.tree, slot)
        else:
            tx.put(self.tree, slot, updated)

    def bucket_digests(self, partition: int) -> dict[int, bytes]:
        """Non-empty bucket digests of one partition."""
        start = bytes([partition])
        end = bytes([partition + 1]) if partition < 255 else None
        return {slot[1]: digest for slot, digest in self.tree.range(start, end)}

    def partition_digests(self) -> dict[int, bytes]:
        """A digest per non-empty partition (XOR of its buckets')."""
        digests: dict[int, bytes] = {}
        for slot, digest in self.tree.range():
            digests[slot[0]] = xor(digests.get(slot[0], EMPTY), digest)
        return digests

    def rows_in(
        self,
        partition: int,
        buckets: Iterable[int],
        start: bytes | None = None,
        limit: int = DIGEST_PAGE_ROWS,
    ) -> DigestPage:
        """One page of the row digests of some buckets of a partition, from position `start`.

        Reads at most `limit` (capped at DIGEST_PAGE_ROWS) index entries.
        """
        if not self.rows_indexed:
            raise RowIndexNotReady(f"{self.row_index.name} is still being built")
        limit = max(1, min(limit, DIGEST_PAGE_ROWS))
        rows: list[tuple[bytes, bytes]] = []
        for bucket in sorted({b for b in buckets if 0 <= b < BUCKETS}):
            low = bytes([partition, bucket])
            if start:
                if bucket < start[0]:
                    continue
                if bucket == start[0]:
                    low += start[1:]
            for index_key, digest in self.row_index.range(low, _bucket_end(partition, bucket)):
                rows.append((index_key[1:], digest))
                if len(rows) >= limit:
                    return DigestPage(rows, index_key[1:])
        return DigestPage(rows, None)

    # ---- building the row index for rows older than it -------------------

    async def build_row_index(self) -> int:
        """Index the rows written before the row index existed; returns the rows visited.

        Runs in transactions of REBUILD_ROWS rows on the writer thread, while
        writes go on (each keeps the index itself, so indexing a row twice is
        harmless). A second pass drops index entries that no row matches.
        """
        async with self._build_lock:
            if self._built.get(self._marker) is not None:
                self.rows_indexed = True
                return 0
            visited = 0
            cursor: bytes | None = None
            while True:
                cursor, count = await self.db.transact(partial(self._index_rows, start=cursor))
                visited += count
                if cursor is None:
                    break
            while True:
                cursor, _ = await self.db.transact(partial(self._drop_strays, start=cursor))
                if cursor is None:
                    break
            await self.db.transact(lambda tx: tx.put(self._built, self._marker, b""))
            self.rows_indexed = True
            return visited

    def _index_rows(self, tx: Tx, start: bytes | None) -> tuple[bytes | None, int]:
        """Index up to REBUILD_ROWS rows from `start`; returns where to go on (None: done)."""
        count = 0
        for key, value in tx.range(self.rows, start):
            tx.put(self.row_index, bytes([key[0], bucket_of(key)]) + key, row_digest(key, value))
            count += 1
            if count >= REBUILD_ROWS:
                return after(key), count
        return None, count

    def _drop_strays(self, tx: Tx, start: bytes | None) -> tuple[bytes | None, int]:
        """Delete index entries (from `start`, up to REBUILD_ROWS) that no row matches."""
        count = 0
        for index_key, digest in tx.range(self.row_index, start):
            key = index_key[2:]
            value = tx.get(self.rows, key)
            if value is None or row_digest(key, value) != digest:
                tx.delete(self.row_index, index_key)
            count += 1
            if count >= REBUILD_ROWS:
                return after(index_key), count
        return None, count


def _bucket_end(partition: int, bucket: int) -> bytes | None:
    """The first index key past a bucket of a partition."""
    if bucket < BUCKETS - 1:
        return bytes([partition, bucket + 1])
    return bytes([partition + 1]) if partition < 255 else None


def _is_empty(tree: Tree) -> bool:
    return next(iter(tree.range()), None) is None


def differing(mine: dict[int, bytes], theirs: dict[int, bytes]) -> list[int]:
    """Slots whose digests differ (a slot missing on one side counts as empty)."""
    return sorted(
        slot for slot in set(mine) | set(theirs) if mine.get(slot, EMPTY) != theirs.get(slot, EMPTY)
    )


@dataclass
class PageComparison:
    """What two replicas' pages over the same range say about each other."""

    only_mine: list[bytes]
    """Storage keys of rows the other side lacks or holds differently."""
    only_theirs: list[bytes]
    """Storage keys of rows this side lacks or holds differently."""
    horizon: bytes | None
    """Both pages are complete up to this position (inclusive); None: to the end."""


def compare_pages(mine: DigestPage, theirs: DigestPage, end: bytes | None = None) -> PageComparison:
    """Compare two pages read from the same start, up to the smaller horizon.

    Past a page's horizon that side said nothing, so the comparison stops at
    the smaller of the two horizons (and at `end`, an inclusive position, if
    given), as the merge of bounded range reads does; the next pages start
    just after it.
    """
    horizons = [h for h in (mine.horizon, theirs.horizon, end) if h is not None]
    horizon = min(horizons) if horizons else None
    mine_rows = _up_to(mine.rows, horizon)
    theirs_rows = _up_to(theirs.rows, horizon)
    return PageComparison(
        only_mine=[key for key, digest in mine_rows.items() if theirs_rows.get(key) != digest],
        only_theirs=[key for key, digest in theirs_rows.items() if mine_rows.get(key) != digest],
        horizon=horizon,
    )


def _up_to(rows: list[tuple[bytes, bytes]], horizon: bytes | None) -> dict[bytes, bytes]:
    return {
        position[1:]: digest for position, digest in rows if horizon is None or position <= horizon
    }
