"""What the block layer counts, under Garage's names (`block_*`): bytes and
durations of the block files read and written, deletions, corrupt copies
found, and the resync worker's work."""

from __future__ import annotations

from granary.telemetry.metrics import Counter, Histogram

BYTES_READ = Counter("block_bytes_read", "Bytes of block files read, as stored")
READ_DURATION = Histogram(
    "block_read_duration", "Seconds to read a block file and verify its content"
)
BYTES_WRITTEN = Counter("block_bytes_written", "Bytes of block files written, as stored")
WRITE_DURATION = Histogram(
    "block_write_duration", "Seconds to write a block file (and sync it, if set)"
)
WRITE_COPY_CPU = Counter(
    "granary_block_write_copy_cpu_seconds",
    "CPU seconds of the write calls that copy new block files into the page cache",
)
"""The kernel's share of storing a block, measured where it happens: on a VM it
swings tenfold with the pages the guest is given (bench/s3_bench.py compares a
PUT's other work with it)."""
DELETED = Counter("block_delete_counter", "Block files deleted (collected or handed over)")
CORRUPT = Counter("block_corruption_counter", "Block copies whose content did not match their id")
RESYNCS = Counter("block_resync_counter", "Blocks the resync worker checked")
RESYNC_ERRORS = Counter("block_resync_error_counter", "Block resyncs that failed")
RESYNC_DURATION = Histogram("block_resync_duration", "Seconds to resync a block")
RESYNC_RECEIVED = Counter(
    "block_resync_recv_counter", "Blocks the resync worker fetched from other nodes"
)
