"""Block files over several data directories: placement, reads, rebalance, markers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import zstandard

from granary.block import codec
from granary.block.codec import CorruptBlock, block_hash, decode_block, maybe_compress
from granary.block.store import MARKER_FILE, BlockStore, DataDirectory
from granary.util.file_region import FileRegion


def blocks(count: int) -> dict[bytes, bytes]:
    datas = [os.urandom(64) + i.to_bytes(4, "big") for i in range(count)]
    return {block_hash(data): data for data in datas}


def store_over(*directories: DataDirectory) -> BlockStore:
    return BlockStore(list(directories), fsync=False, compression_level=None)


def files_in(directory: Path) -> set[str]:
    return {p.name for p in directory.rglob("*") if p.is_file() and p.name != MARKER_FILE}


def test_writes_spread_by_capacity_and_reads_look_everywhere(tmp_path):
    small, big = DataDirectory(tmp_path / "small", 1), DataDirectory(tmp_path / "big", 3)
    store = store_over(small, big)
    written = blocks(400)
    for block_id, data in written.items():
        store.write(block_id, data)
    share = len(files_in(big.path)) / len(written)
    assert 0.65 < share < 0.85  # 3/4 expected
    # The same blocks, seen through a store that lists the directories the other way round.
    swapped = store_over(big, small)
    assert all(swapped.read(block_id) == data for block_id, data in written.items())


def test_blocks_after_walks_every_directory_in_id_order(tmp_path):
    store = store_over(DataDirectory(tmp_path / "a", 1), DataDirectory(tmp_path / "b", 1))
    written = sorted(blocks(50))
    for block_id in written:
        store.write(block_id, b"")  # content does not matter to the listing
    assert store.blocks_after(None, 1000) == written
    assert store.blocks_after(None, 7) == written[:7]
    assert store.blocks_after(written[9], 5) == written[10:15]
    assert store.blocks_after(written[-1], 5) == []


def test_rebalance_drains_a_read_only_directory(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    before = store_over(DataDirectory(old, 1))
    written = blocks(30)
    for block_id, data in written.items():
        before.write(block_id, data)
    after = store_over(DataDirectory(old, 1, read_only=True), DataDirectory(new, 1))
    assert all(after.read(b) == d for b, d in written.items())
    moved = sum(after.relocate(block_id) for block_id in written)
    assert moved == len(written)
    assert files_in(old) == set()
    assert len(files_in(new)) == len(written)
    assert all(after.read(b) == d for b, d in written.items())
    assert sum(after.relocate(block_id) for block_id in written) == 0


@pytest.mark.parametrize("read", ["read", "read_for_sending"])
def test_corrupt_copy_is_quarantined(tmp_path, read):
    store = store_over(DataDirectory(tmp_path / "d", 1))
    (block_id, data), *_ = blocks(1).items()
    store.write(block_id, data)
    path, _ = store.find(block_id)
    path.write_bytes(b"X" + data[1:])
    with pytest.raises(CorruptBlock):
        getattr(store, read)(block_id)
    assert getattr(store, read)(block_id) is None
    assert [p.name for p, _ in store.locations(block_id)] == [path.name + ".corrupted"]


def test_a_plain_block_is_read_for_sending_as_its_file_and_a_compressed_one_as_bytes(tmp_path):
    store = BlockStore([DataDirectory(tmp_path / "d", 1)], fsync=False, compression_level=1)
    plain, compressible = os.urandom(300_000), b"granary " * 40_000
    for data in (plain, compressible):
        store.write(block_hash(data), data)
    assert store.find(block_hash(plain))[1] is False
    assert store.find(block_hash(compressible))[1] is True

    region = store.read_for_sending(block_hash(plain))
    assert isinstance(region, FileRegion)
    assert (region.offset, len(region)) == (0, len(plain))
    assert region.read() == plain
    assert store.read_for_sending(block_hash(compressible)) == compressible
    assert store.read_for_sending(block_hash(b"absent")) is None


def test_a_truncated_plain_block_is_corrupt_when_read_for_sending(tmp_path):
    store = store_over(DataDirectory(tmp_path / "d", 1))
    (block_id, data), *_ = blocks(1).items()
    store.write(block_id, data)
    path, _ = store.find(block_id)
    path.write_bytes(b"")
    with pytest.raises(CorruptBlock):
        store.read_for_sending(block_id)
    assert path.with_name(path.name + ".corrupted").exists()


def test_marker_new_disk_versus_wrong_mount(tmp_path):
    fresh = store_over(DataDirectory(tmp_path / "new", 1))
    assert [d.path for d in fresh.fresh] == [tmp_path / "new"]
    assert store_over(DataDirectory(tmp_path / "new", 1)).fresh == []
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "somebody-elses-file").write_text("x")
    with pytest.raises(RuntimeError, match="is the right disk mounted"):
        store_over(DataDirectory(foreign, 1))


def test_a_compressed_block_whose_header_announces_exabytes_is_corrupt_not_out_of_memory():
    data = b"granary compresses this line well. " * 3000
    stored, compressed = maybe_compress(data, 1)
    assert compressed
    rotten = bytearray(stored)
    rotten[4] = 0xF0  # frame header: an 8-byte content size, read from the bytes after it
    assert zstandard.frame_content_size(bytes(rotten)) > 1 << 40
    with pytest.raises(CorruptBlock, match="announces"):
        decode_block(bytes(rotten), True, block_hash(data))
    assert decode_block(stored, True, block_hash(data)) == data


def test_an_incompressible_block_is_stored_plain_after_a_probe_of_its_head(monkeypatch):
    """Random data is given up after compressing 64 KiB of it, not the whole block."""
    compressed_sizes: list[int] = []
    compressor = zstandard.ZstdCompressor(level=1, write_checksum=True)

    class CountingCompressor:
        def compress(self, data) -> bytes:
            compressed_sizes.append(len(data))
            return compressor.compress(data)

    monkeypatch.setattr(codec, "_compressor", lambda level: CountingCompressor())
    noise = os.urandom(1 << 20)
    assert maybe_compress(noise, 1) == (noise, False)
    assert compressed_sizes == [codec.PROBE_BYTES]
    text = b"a log line that repeats itself, as logs do. " * 30000
    stored, compressed = maybe_compress(text, 1)
    assert compressed and len(stored) < len(text) // 10
    assert compressed_sizes[1:] == [codec.PROBE_BYTES, len(text)]
    assert decode_block(bytes(stored), True, block_hash(text)) == text


def test_a_block_folder_removed_behind_the_stores_back_is_made_again(tmp_path):
    store = store_over(DataDirectory(tmp_path / "d", 1))
    first, second = (bytes.fromhex("abcd") + bytes([n]) * 30 for n in (1, 2))
    assert store.write(first, b"one") == 3
    shutil.rmtree(tmp_path / "d" / "ab")  # the folder is remembered as made
    assert store.write(second, b"two") == 3
    assert (tmp_path / "d" / "ab" / "cd" / second.hex()).read_bytes() == b"two"
    assert not store.contains(first)


def test_a_crashed_writers_temporary_files_are_swept_and_no_one_elses(tmp_path):
    a = DataDirectory(tmp_path / "a", 1)
    b = DataDirectory(tmp_path / "b", 1, read_only=False)
    store = store_over(a, b)
    stored = blocks(4)
    for block_id, data in stored.items():
        store.write(block_id, data)
    hexid = next(iter(stored)).hex()
    folder = a.path / hexid[:2] / hexid[2:4]
    folder.mkdir(parents=True, exist_ok=True)
    old, live = 1_000_000.0, 2_000_000.0
    left = {
        f".{hexid}.tmp-4242-0": old,  # the dead worker's
        f".{hexid}.tmp-4242-1": live,  # pid 4242 again, after `before`: a live writer
        f".{hexid}.tmp-77-0": old,  # another process's
        f".{hexid}.zst.tmp-0a1b2c3d4e5f": old,  # a move between directories
    }
    for name, mtime in left.items():
        (folder / name).write_bytes(b"partial")
        os.utime(folder / name, (mtime, mtime))
    assert store.sweep_temp_files(before=1_500_000.0, pid=4242) == 1
    assert {p.name for p in folder.iterdir()} >= set(left) - {f".{hexid}.tmp-4242-0"}
    assert store.sweep_temp_files(before=1_500_000.0) == 2  # every crashed writer's
    assert {p.name for p in folder.iterdir() if p.name.startswith(".")} == {f".{hexid}.tmp-4242-1"}
    for block_id, data in stored.items():
        assert store.read(block_id) == data
