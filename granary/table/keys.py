"""Storage keys of table entries.

A row is stored under ``hash(partition key)[:16] + encoded sort key``. The
metadata engines cap keys at 511 bytes but S3 object keys go to 1,024 bytes,
so a sort key longer than `SORT_KEY_INLINE` bytes is stored as its first
`SORT_KEY_INLINE` bytes followed by a hash of the whole key. Such keys still
sort correctly against every other key except those sharing the same
truncated prefix; `resort_long_runs` puts those few back in order while
scanning (a shorter key can never fall inside such a run).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import blake3

PARTITION_HASH_BYTES = 16
SORT_KEY_INLINE = 448
PARTITIONS = 256

T = TypeVar("T")


def partition_hash(partition_key: bytes) -> bytes:
    """The fixed-size hash that places a partition key on the ring."""
    return blake3.blake3(partition_key).digest(PARTITION_HASH_BYTES)


def partition_of(phash: bytes) -> int:
    """Which of the 256 partitions a partition hash falls in."""
    return phash[0]


def encode_sort_key(sort_key: bytes) -> bytes:
    if len(sort_key) <= SORT_KEY_INLINE:
        return sort_key
    return sort_key[:SORT_KEY_INLINE] + blake3.blake3(sort_key).digest(16)


def storage_key(partition_key: bytes, sort_key: bytes) -> bytes:
    return partition_hash(partition_key) + encode_sort_key(sort_key)


def is_truncated(encoded_sort_key: bytes) -> bool:
    return len(encoded_sort_key) > SORT_KEY_INLINE


def resort_long_runs(
    rows: Iterable[tuple[bytes, T]], full_sort_key: Callable[[T], bytes], *, reverse: bool = False
) -> Iterator[tuple[bytes, T]]:
    """Yield (encoded sort key, item) in true sort-key order.

    `rows` come in encoded-key order; runs of truncated keys that share their
    inline prefix are buffered and re-sorted by the full sort key.
    """
    run: list[tuple[bytes, T]] = []
    run_prefix = b""
    for encoded, item in rows:
        if is_truncated(encoded) and run and encoded[:SORT_KEY_INLINE] == run_prefix:
            run.append((encoded, item))
            continue
        if run:
            run.sort(key=lambda row: full_sort_key(row[1]), reverse=reverse)
            yield from run
            run = []
        if is_truncated(encoded):
            run = [(encoded, item)]
            run_prefix = encoded[:SORT_KEY_INLINE]
        else:
            yield encoded, item
    if run:
        run.sort(key=lambda row: full_sort_key(row[1]), reverse=reverse)
        yield from run


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix`, if any."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])
