"""A two-level summary of a table's rows, for cheap replica comparison.

Rows are grouped by partition (the first byte of their storage key, as on
the ring) and, inside a partition, into 256 buckets by a hash of the whole
storage key. Each bucket's digest is the XOR of its rows' digests, so a
write updates one small record in the same transaction that changes the
row, with no tree to rebalance. Two replicas compare the 256 partition
digests, then the bucket digests of the partitions that differ, then the
rows of the buckets that differ.
"""

from __future__ import annotations

from collections.abc import Iterable

import blake3

from granary.db.base import Db, Tree, Tx

DIGEST_BYTES = 16
EMPTY = bytes(DIGEST_BYTES)


def row_digest(key: bytes, value: bytes) -> bytes:
    hasher = blake3.blake3(len(key).to_bytes(2, "big"))
    hasher.update(key)
    hasher.update(value)
    return hasher.digest(DIGEST_BYTES)


def bucket_of(key: bytes) -> int:
    return blake3.blake3(key).digest(1)[0]


def xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(DIGEST_BYTES, "big")


class MerkleIndex:
    """Bucket digests of one table, kept in its own tree."""

    def __init__(self, db: Db, table_name: str, rows: Tree) -> None:
        self.rows = rows
        self.tree = db.tree(f"{table_name}:merkle")

    def update(self, tx: Tx, key: bytes, old: bytes | None, new: bytes | None) -> None:
        """Account for a row changing from `old` to `new` (None: absent)."""
        change = EMPTY
        if old is not None:
            change = xor(change, row_digest(key, old))
        if new is not None:
            change = xor(change, row_digest(key, new))
        if change == EMPTY:
            return
        slot = bytes([key[0], bucket_of(key)])
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

    def rows_in(self, partition: int, buckets: Iterable[int]) -> dict[bytes, bytes]:
        """storage key -> row digest, for the rows of some buckets of a partition."""
        wanted = set(buckets)
        start = bytes([partition])
        end = bytes([partition + 1]) if partition < 255 else None
        return {
            key: row_digest(key, value)
            for key, value in self.rows.range(start, end)
            if bucket_of(key) in wanted
        }


def differing(mine: dict[int, bytes], theirs: dict[int, bytes]) -> list[int]:
    """Slots whose digests differ (a slot missing on one side counts as empty)."""
    return sorted(
        slot for slot in set(mine) | set(theirs) if mine.get(slot, EMPTY) != theirs.get(slot, EMPTY)
    )
