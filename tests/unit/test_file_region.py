"""Regions of open files: cut like bytes, read exactly, closed with their last reference."""

from __future__ import annotations

import gc
import os

import pytest

from granary.util.file_region import FileRegion, OpenFile


@pytest.fixture
def region(tmp_path) -> FileRegion:
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 4)
    return FileRegion(OpenFile(os.open(path, os.O_RDONLY)), 0, 1024)


@pytest.mark.parametrize(("low", "high"), [(0, 1024), (10, 20), (1000, 2000), (30, 10), (0, 0)])
def test_a_slice_holds_the_bytes_a_bytes_slice_would(region, low, high):
    whole = region.read()
    cut = region.slice(low, high)
    assert cut.read() == whole[low:high]
    assert len(cut) == len(whole[low:high])
    assert cut.slice(1, 5).read() == whole[low:high][1:5]


def test_a_region_past_the_end_of_its_file_is_an_error(region):
    with pytest.raises(OSError, match="shorter than its region"):
        FileRegion(region.file, 1000, 100).read()


def test_the_file_closes_when_its_last_region_is_dropped(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    fd = os.open(path, os.O_RDONLY)
    region = FileRegion(OpenFile(fd), 0, 100)
    part = region.slice(0, 10)
    del region
    gc.collect()
    os.fstat(fd)  # still open: `part` holds the file
    del part
    with pytest.raises(OSError):
        os.fstat(fd)
