"""One page of ListObjectVersions over the object table.

A key's versions live in its row, so a page walks keys as ListObjects does
(`listing.list_page`: prefix, delimiter, bounded reads) and shows each key's
versions newest first. A page can end in the middle of a key: the position is
then (key, version id), which the client sends back as key-marker and
version-id-marker, and the next page starts with that key's older versions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from granary.api.s3.listing import Fetch, common_prefix, list_page
from granary.model.object import Object, ObjectVersion

# get(key) -> the key's row, if any
GetRow = Callable[[str], Awaitable[Object | None]]


@dataclass
class VersionPage:
    versions: list[tuple[str, ObjectVersion, bool]] = field(default_factory=list)
    """(key, version, is it the key's latest) in S3's order."""
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    next_key_marker: str | None = None
    next_version_id_marker: str | None = None
    """None when the next page starts after the whole of `next_key_marker`."""

    @property
    def count(self) -> int:
        return len(self.versions) + len(self.prefixes)


def _older_than(row: Object | None, version_id: str) -> list[ObjectVersion]:
    """The versions of a row listed after `version_id` (none if it is not there)."""
    listed = [] if row is None else row.listed()
    ids = [v.version_id for v in listed]
    return listed[ids.index(version_id) + 1 :] if version_id in ids else []


async def version_page(
    fetch: Fetch[Object],
    get_row: GetRow,
    *,
    prefix: str,
    delimiter: str | None,
    key_marker: str | None,
    version_id_marker: str | None,
    max_keys: int,
) -> VersionPage:
    """Up to `max_keys` versions and common prefixes after the markers (S3 ignores a
    version-id-marker without a key-marker)."""
    page = VersionPage()
    if max_keys <= 0:
        return page
    # (key, its versions still to show, latest shown?) or (common prefix, None, False)
    pending: list[tuple[str, list[ObjectVersion] | None, bool]] = []
    if (
        key_marker is not None
        and version_id_marker is not None
        and key_marker.startswith(prefix)
        and common_prefix(key_marker, prefix, delimiter) is None
    ):
        row = await get_row(key_marker)
        pending.append((key_marker, _older_than(row, version_id_marker), False))
    keys = await list_page(
        fetch, prefix=prefix, delimiter=delimiter, marker=key_marker or None, max_keys=max_keys
    )
    found: list[tuple[str, list[ObjectVersion] | None, bool]] = [
        (key, row.listed(), True) for key, row in keys.items
    ]
    found += [(folded, None, False) for folded in keys.prefixes]
    pending += sorted(found, key=lambda item: item[0].encode())
    for key, versions, first_is_latest in pending:
        if versions is None:
            if page.count >= max_keys:
                return _cut_at(page)
            page.prefixes.append(key)
            page.next_key_marker, page.next_version_id_marker = key, None
            continue
        for index, version in enumerate(versions):
            if page.count >= max_keys:
                return _cut_at(page)
            page.versions.append((key, version, first_is_latest and index == 0))
            page.next_key_marker, page.next_version_id_marker = key, version.version_id
    if keys.truncated:
        page.truncated = True
        if keys.cut:  # the reads' bound ended the page past what it shows
            page.next_key_marker, page.next_version_id_marker = keys.last, None
    return page


def _cut_at(page: VersionPage) -> VersionPage:
    page.truncated = True
    return page
