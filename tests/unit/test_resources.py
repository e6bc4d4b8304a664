"""The open-file limit the server raises at start, and the unmapping of a mapped
file's pages (the heap trim is covered by tests/integration/test_limits.py)."""

from __future__ import annotations

import mmap
import os
import resource

from granary.util.resources import raise_open_file_limit, unmap_file_pages
from tests.mapped_memory import mapped_rss


def test_raise_open_file_limit_to_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = 256 if hard == resource.RLIM_INFINITY else min(256, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        raised = raise_open_file_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == raised
        assert raised > lowered or hard == lowered
        if hard != resource.RLIM_INFINITY:
            assert raised == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_unmapping_a_shared_file_mapping_frees_its_resident_pages_and_keeps_its_data(tmp_path):
    path = tmp_path / "data.mdb"
    content = os.urandom(4 << 20)
    path.write_bytes(content)
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        assert mapped[:] == content  # every page read, so mapped into this process
        assert mapped_rss("self", str(path.resolve())) >= 4 << 20
        assert unmap_file_pages(path) == 4 << 20
        assert mapped_rss("self", str(path.resolve())) == 0
        assert mapped[:] == content
    assert unmap_file_pages(tmp_path / "not-mapped") == 0
