"""One page of ListMultipartUploads over the upload index.

A key may have many uploads, so a page can end in the middle of a key: the
position is then (key, upload id), which the client sends back as
key-marker and upload-id-marker. Prefix and delimiter work as for objects:
a delimiter folds every upload below a common prefix into that prefix, and
the scan jumps past the whole folded range instead of walking it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from granary.api.s3.listing import common_prefix
from granary.model.mpu_index import UploadIndexEntry, after_key, after_upload, encode_key
from granary.table.keys import prefix_end
from granary.table.scan import RangePage

BATCH = 1000

# fetch(start sort key (inclusive), limit) -> one bounded page of index entries in sort-key order
FetchUploads = Callable[[bytes | None, int], Awaitable[RangePage[UploadIndexEntry]]]


@dataclass
class UploadPage:
    uploads: list[UploadIndexEntry] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    next_key_marker: str | None = None
    next_upload_id_marker: str | None = None
    """Empty when the page ended on a common prefix."""

    @property
    def count(self) -> int:
        return len(self.uploads) + len(self.prefixes)


def start_position(prefix: str, key_marker: str | None, upload_id_marker: str | None) -> bytes:
    """Where the scan starts: past the markers, and not before the prefix.

    Without an upload-id-marker, the key-marker's own uploads were all
    listed; with one, the uploads of that key after it (by initiation time)
    come first. S3 ignores the upload-id-marker without a key-marker; an id
    that is not hex is taken as no id.
    """
    start = b""
    if key_marker:
        start = after_key(key_marker)
        if upload_id_marker:
            with contextlib.suppress(ValueError):
                start = after_upload(key_marker, bytes.fromhex(upload_id_marker))
    return max(start, encode_key(prefix))


async def upload_page(
    fetch: FetchUploads,
    *,
    prefix: str,
    delimiter: str | None,
    key_marker: str | None,
    upload_id_marker: str | None,
    max_uploads: int,
    batch_size: int = BATCH,
) -> UploadPage:
    """Up to `max_uploads` uploads and common prefixes after the markers.

    A common prefix that does not sort after the key-marker was returned by
    an earlier page, so it is skipped rather than repeated.
    """
    page = UploadPage()
    if max_uploads <= 0:
        return page
    position: bytes | None = start_position(prefix, key_marker, upload_id_marker)
    while True:
        # One entry more than the page still needs tells whether it is truncated.
        wanted = min(batch_size, max_uploads - page.count + 1)
        batch = await fetch(position, wanted)
        jumped = False
        for entry in batch.entries:
            if not entry.key.startswith(prefix):
                if entry.key > prefix:
                    return page
                continue
            if page.count >= max_uploads:
                page.truncated = True
                return page
            folded = common_prefix(entry.key, prefix, delimiter)
            if folded is None:
                page.uploads.append(entry)
                page.next_key_marker = entry.key
                page.next_upload_id_marker = entry.upload_id.hex()
                continue
            if key_marker is None or folded > key_marker:
                page.prefixes.append(folded)
                page.next_key_marker = folded
                page.next_upload_id_marker = ""
            position = _past_prefix(folded)
            if position is None:
                return page
            jumped = True
            break
        if not jumped:
            position = batch.next_start
            if position is None:
                return page


def _past_prefix(folded: str) -> bytes | None:
    """The smallest sort key past the uploads of every key starting with `folded`."""
    return prefix_end(encode_key(folded))
