"""ListMultipartUploads paging over the upload index: markers inside a key's uploads,
prefix and delimiter, page ends on a common prefix, small fetch batches."""

from __future__ import annotations

import asyncio

import pytest

from granary.api.s3.upload_listing import UploadPage, upload_page
from granary.model.mpu_index import UploadIndexEntry, index_sort_key
from granary.table.scan import RangePage

BUCKET = b"b" * 16


def entries(*uploads: tuple[str, int]) -> list[UploadIndexEntry]:
    """Index entries for (key, n): upload id n (big-endian), in index order."""
    made = [UploadIndexEntry(BUCKET, key, n.to_bytes(16, "big"), n) for key, n in uploads]
    return sorted(made, key=lambda e: index_sort_key(e.key, e.upload_id))


def page_of(
    index: list[UploadIndexEntry], batch_size: int = 1000, replica_rows: int = 1000, **params
) -> UploadPage:
    """A page over `index`, whose reads stop after `replica_rows` rows, as a bounded scan does."""

    async def fetch(start: bytes | None, limit: int) -> RangePage[UploadIndexEntry]:
        after = [e for e in index if index_sort_key(e.key, e.upload_id) >= (start or b"")]
        shown = after[: min(limit, replica_rows)]
        more = len(after) > len(shown)
        horizon = index_sort_key(shown[-1].key, shown[-1].upload_id) if more else None
        return RangePage(shown, horizon)

    defaults = {"prefix": "", "delimiter": None, "key_marker": None, "upload_id_marker": None}
    return asyncio.run(upload_page(fetch, batch_size=batch_size, **{**defaults, **params}))


def listed(page: UploadPage) -> list[tuple[str, int]]:
    return [(e.key, int.from_bytes(e.upload_id, "big")) for e in page.uploads]


# In S3's (UTF-8 byte) order "a\x00" sorts before "a/x".
INDEX = entries(("a", 1), ("a", 2), ("a", 3), ("a/x", 4), ("a/y", 5), ("a\x00", 6), ("b", 7))


@pytest.mark.parametrize("replica_rows", [1, 1000])
@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_pages_walk_every_upload_once(batch_size, replica_rows):
    """Also when each read stops short of its limit (a replica's scan bound)."""
    seen: list[tuple[str, int]] = []
    key_marker = upload_id_marker = None
    while True:
        page = page_of(
            INDEX,
            batch_size,
            replica_rows,
            max_uploads=2,
            key_marker=key_marker,
            upload_id_marker=upload_id_marker,
        )
        seen += listed(page)
        if not page.truncated:
            break
        key_marker, upload_id_marker = page.next_key_marker, page.next_upload_id_marker
    assert seen == [(e.key, int.from_bytes(e.upload_id, "big")) for e in INDEX]


def test_key_marker_alone_skips_all_of_its_uploads():
    assert listed(page_of(INDEX, max_uploads=10, key_marker="a")) == [
        ("a\x00", 6),
        ("a/x", 4),
        ("a/y", 5),
        ("b", 7),
    ]


def test_a_bad_upload_id_marker_counts_as_none():
    page = page_of(INDEX, max_uploads=10, key_marker="a", upload_id_marker="zz")
    assert listed(page)[0] == ("a\x00", 6)


def test_delimiter_folds_and_a_page_can_end_on_a_prefix():
    page = page_of(INDEX, max_uploads=5, delimiter="/")
    assert listed(page) == [("a", 1), ("a", 2), ("a", 3), ("a\x00", 6)]
    assert page.prefixes == ["a/"]
    assert page.truncated
    assert (page.next_key_marker, page.next_upload_id_marker) == ("a/", "")
    rest = page_of(INDEX, max_uploads=5, delimiter="/", key_marker="a/")
    assert listed(rest) == [("b", 7)]
    assert rest.prefixes == [] and not rest.truncated


def test_prefix_limits_the_scan():
    page = page_of(INDEX, max_uploads=10, prefix="a/")
    assert listed(page) == [("a/x", 4), ("a/y", 5)]
    assert not page.truncated
