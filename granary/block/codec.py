"""Block content: ids, compression and verification. Pure functions.

A block id is the BLAKE3 hash of the block's plain content, so identical
blocks are stored once. A block is kept compressed only when zstd makes it
smaller; reading always re-checks the id, so a corrupt copy is never served.

Most large uploads (media, archives, encrypted backups) do not compress. zstd
spends ~0.28 CPU-s per GiB finding that out, so a block is first probed: its
first `PROBE_BYTES` are compressed, and a block whose probe does not shrink by
`PROBE_MIN_SAVING` is stored as is (the probe costs a sixteenth of that).
"""

from __future__ import annotations

import mmap
import threading

import blake3
import zstandard

_local = threading.local()

MAX_BLOCK_BYTES = 1 << 30
"""No block is larger: the limit on what a stored block may decompress to."""

PROBE_BYTES = 64 << 10
PROBE_MIN_SAVING = 0.05


class CorruptBlock(Exception):
    """A stored block does not match its id."""


def block_hash(data: bytes | bytearray | memoryview) -> bytes:
    return blake3.blake3(data).digest()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    compressor = cache.get(level)
    if compressor is None:
        compressor = cache[level] = zstandard.ZstdCompressor(level=level, write_checksum=True)
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def maybe_compress(data: bytes | bytearray, level: int | None) -> tuple[bytes | bytearray, bool]:
    """(stored bytes, compressed?) — compressed only if that saves space."""
    if level is None:
        return data, False
    compressor = _compressor(level)
    if len(data) > 2 * PROBE_BYTES:
        probe = compressor.compress(memoryview(data)[:PROBE_BYTES])
        if len(probe) > PROBE_BYTES * (1 - PROBE_MIN_SAVING):
            return data, False
    packed = compressor.compress(data)
    if len(packed) < len(data):
        return packed, True
    return data, False


def decode_block(stored: bytes, compressed: bool, expected: bytes) -> bytes:
    """Return the plain content of a stored block, verified against its id.

    The size a zstd frame announces is checked before decompressing: the
    decompressor allocates that much at once, whatever its output limit, so a
    flipped bit in the header would otherwise ask for exabytes (MemoryError)
    instead of reporting a corrupt copy.
    """
    if compressed:
        try:
            announced = zstandard.frame_content_size(stored)
            if announced > MAX_BLOCK_BYTES:
                raise CorruptBlock(f"zstd frame announces {announced} bytes")
            data = _decompressor().decompress(stored, max_output_size=MAX_BLOCK_BYTES)
        except zstandard.ZstdError as exc:
            raise CorruptBlock(f"zstd: {exc}") from None
    else:
        data = stored
    if block_hash(data) != expected:
        raise CorruptBlock("content does not match the block id")
    return data


def verify_mapped(fd: int, size: int, expected: bytes) -> None:
    """Check a plain block file against its id without reading it into memory.

    The file is mapped with its pages populated in one call (a fault per page
    would cost more than the hash).
    """
    if size == 0:
        found = block_hash(b"")
    else:
        mapping = mmap.mmap(
            fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ
        )
        with mapping, memoryview(mapping) as view:
            found = block_hash(view)
    if found != expected:
        raise CorruptBlock("content does not match the block id")
