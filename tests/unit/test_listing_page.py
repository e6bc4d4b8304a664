"""Sans-IO tests of `list_page`: prefix, delimiter, marker and paging over an in-memory index."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from granary.api.s3.listing import Page, after, list_page, past_prefix


class MemoryIndex:
    """A sorted key index answering `fetch` like the object table does, counting calls.

    `dead` keys are rows the listing filter drops (deleted objects): a fetch
    scans at most `scan_rows` rows, live or dead, and says how far it got.
    """

    def __init__(self, keys: set[str], dead: frozenset[str] = frozenset(), scan_rows: int = 0):
        self.keys = sorted(keys, key=str.encode)
        self.rows = sorted(set(keys) | dead, key=str.encode)
        self.live = set(keys)
        self.scan_rows = scan_rows or len(self.rows) + 1
        self.fetches = 0

    async def fetch(
        self, start: bytes | None, limit: int
    ) -> tuple[list[tuple[str, int]], str | None]:
        self.fetches += 1
        rows = [k for k in self.rows if start is None or k.encode() >= start]
        found: list[tuple[str, int]] = []
        for scanned, key in enumerate(rows, 1):
            if key in self.live:
                found.append((key, len(key)))
            if len(found) >= limit or scanned >= self.scan_rows:
                return found, key
        return found, None


def reference(keys: set[str], prefix: str, delimiter: str | None, marker: str | None) -> list:
    """Every entry (("key", k) or ("prefix", p)) a listing after `marker` holds, in order."""
    entries: set[tuple[str, str]] = set()
    for key in keys:
        if not key.startswith(prefix):
            continue
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        if cut < 0:
            entries.add(("key", key))
        else:
            entries.add(("prefix", key[: cut + len(delimiter)]))
    after_marker = [e for e in entries if marker is None or e[1].encode() > marker.encode()]
    return sorted(after_marker, key=lambda entry: entry[1].encode())


def page_entries(page: Page) -> list[tuple[str, str]]:
    entries = [("key", key) for key, _ in page.items] + [("prefix", p) for p in page.prefixes]
    return sorted(entries, key=lambda entry: entry[1].encode())


def one_page(index: MemoryIndex, **options) -> Page:
    options.setdefault("delimiter", None)
    options.setdefault("prefix", "")
    options.setdefault("marker", None)
    return asyncio.run(list_page(index.fetch, **options))


def list_all(
    index: MemoryIndex,
    *,
    prefix: str,
    delimiter: str | None,
    marker: str | None,
    max_keys: int,
    batch_size: int,
    max_fetches: int = 1000,
) -> list[Page]:
    """Page through a listing the way a client does, checking each page's shape."""
    pages = []
    while True:
        page = one_page(
            index,
            prefix=prefix,
            delimiter=delimiter,
            marker=marker,
            max_keys=max_keys,
            batch_size=batch_size,
            max_fetches=max_fetches,
        )
        pages.append(page)
        assert page.count <= max_keys
        entries = page_entries(page)
        if entries:
            assert page.last.encode() >= entries[-1][1].encode()
        if not page.truncated:
            return pages
        if not page.cut:
            assert page.count == max_keys
            assert page.last == entries[-1][1]
        assert marker is None or page.last.encode() > marker.encode(), "paging does not advance"
        marker = page.last


# ---- examples --------------------------------------------------------------

KEYS = {
    "a",
    "a/b",
    "a/c/d",
    "a/c/e",
    "ab",
    "b/1",
    "b/2",
    "c",
    "photos/2024/jan.jpg",
    "photos/2024/feb.jpg",
    "photos/2025/mar.jpg",
    "photos/index.html",
}


def test_no_delimiter_lists_every_key_in_byte_order() -> None:
    page = one_page(MemoryIndex(KEYS), max_keys=1000)
    assert [key for key, _ in page.items] == sorted(KEYS)
    assert page.prefixes == []
    assert not page.truncated


def test_delimiter_folds_keys_into_common_prefixes() -> None:
    page = one_page(MemoryIndex(KEYS), delimiter="/", max_keys=1000)
    assert [key for key, _ in page.items] == ["a", "ab", "c"]
    assert page.prefixes == ["a/", "b/", "photos/"]


def test_prefix_and_delimiter() -> None:
    page = one_page(MemoryIndex(KEYS), prefix="photos/", delimiter="/", max_keys=1000)
    assert [key for key, _ in page.items] == ["photos/index.html"]
    assert page.prefixes == ["photos/2024/", "photos/2025/"]


def test_prefix_that_is_a_whole_key_and_more() -> None:
    page = one_page(MemoryIndex(KEYS), prefix="a", delimiter="/", max_keys=1000)
    assert [key for key, _ in page.items] == ["a", "ab"]
    assert page.prefixes == ["a/"]


def test_truncated_page_ends_at_last_entry_and_next_page_continues() -> None:
    index = MemoryIndex(KEYS)
    first = one_page(index, delimiter="/", max_keys=2)
    assert first.truncated
    assert first.last == "a/"
    second = one_page(index, delimiter="/", marker=first.last, max_keys=2)
    assert [key for key, _ in second.items] == ["ab"]
    assert second.prefixes == ["b/"]
    assert second.truncated


def test_page_exactly_full_at_the_end_is_not_truncated() -> None:
    page = one_page(MemoryIndex({"x", "y"}), max_keys=2)
    assert page.count == 2
    assert not page.truncated


def test_marker_inside_a_common_prefix_does_not_repeat_it() -> None:
    page = one_page(MemoryIndex(KEYS), delimiter="/", marker="a/c/d", max_keys=1000)
    assert "a/" not in page.prefixes
    assert [key for key, _ in page.items] == ["ab", "c"]


def test_marker_past_the_prefix_gives_an_empty_page() -> None:
    page = one_page(MemoryIndex(KEYS), prefix="b/", marker="b/9", max_keys=1000)
    assert page.count == 0
    assert not page.truncated


def test_zero_max_keys_reads_nothing() -> None:
    index = MemoryIndex(KEYS)
    page = one_page(index, max_keys=0)
    assert page.count == 0
    assert not page.truncated
    assert index.fetches == 0


def test_a_common_prefix_is_skipped_over_not_walked() -> None:
    keys = {f"big/{i:05}" for i in range(5000)} | {"small"}
    index = MemoryIndex(keys)
    page = one_page(index, delimiter="/", max_keys=1000, batch_size=100)
    assert page.prefixes == ["big/"]
    assert [key for key, _ in page.items] == ["small"]
    assert index.fetches <= 3


def test_batches_are_chained_without_gaps() -> None:
    keys = {f"k{i:04}" for i in range(250)}
    page = one_page(MemoryIndex(keys), max_keys=1000, batch_size=7, max_fetches=1000)
    assert [key for key, _ in page.items] == sorted(keys)


def test_utf8_byte_order_not_utf16_order() -> None:
    # U+FF5E sorts before U+1F600 in UTF-8 (and code points) but after it in UTF-16.
    keys = {"\U0001f600", "\uff5e", "z", "é"}
    page = one_page(MemoryIndex(keys), max_keys=1000)
    assert [key for key, _ in page.items] == ["z", "é", "\uff5e", "\U0001f600"]


def test_after_and_past_prefix() -> None:
    assert after("ab") == b"ab\x00"
    assert past_prefix("ab/") == b"ab0"
    assert past_prefix("a\U0001f600") == "a\U0001f600".encode()[:-1] + b"\x81"
    assert past_prefix("") is None


# ---- properties ------------------------------------------------------------

ALPHABET = st.sampled_from(["a", "b", "/", "-", "é", "\U0001f600", "\x7f", "\x01", "ab"])
KEY = st.lists(ALPHABET, min_size=1, max_size=6).map("".join)
KEY_SETS = st.sets(KEY, max_size=60)
PREFIXES = st.one_of(st.just(""), KEY)
DELIMITERS = st.sampled_from([None, "/", "-", "ab", "é", "\U0001f600"])
MARKERS = st.one_of(st.none(), KEY)


@settings(max_examples=400, deadline=None)
@given(
    keys=KEY_SETS,
    prefix=PREFIXES,
    delimiter=DELIMITERS,
    max_keys=st.integers(1, 12),
    batch_size=st.integers(1, 8),
)
def test_paging_yields_exactly_the_reference_listing(
    keys: set[str], prefix: str, delimiter: str | None, max_keys: int, batch_size: int
) -> None:
    pages = list_all(
        MemoryIndex(keys),
        prefix=prefix,
        delimiter=delimiter,
        marker=None,
        max_keys=max_keys,
        batch_size=batch_size,
    )
    listed = [entry for page in pages for entry in page_entries(page)]
    assert listed == reference(keys, prefix, delimiter, None)


@settings(max_examples=300, deadline=None)
@given(
    keys=KEY_SETS,
    prefix=PREFIXES,
    delimiter=DELIMITERS,
    marker=MARKERS,
    max_keys=st.integers(1, 12),
    batch_size=st.integers(1, 8),
)
def test_listing_after_any_marker_matches_the_reference(
    keys: set[str],
    prefix: str,
    delimiter: str | None,
    marker: str | None,
    max_keys: int,
    batch_size: int,
) -> None:
    pages = list_all(
        MemoryIndex(keys),
        prefix=prefix,
        delimiter=delimiter,
        marker=marker,
        max_keys=max_keys,
        batch_size=batch_size,
    )
    listed = [entry for page in pages for entry in page_entries(page)]
    assert listed == reference(keys, prefix, delimiter, marker)
    assert len({name for _, name in listed}) == len(listed)


@settings(max_examples=200, deadline=None)
@given(keys=KEY_SETS, prefix=PREFIXES, delimiter=DELIMITERS, batch_size=st.integers(1, 8))
def test_one_large_page_equals_many_small_pages(
    keys: set[str], prefix: str, delimiter: str | None, batch_size: int
) -> None:
    index = MemoryIndex(keys)
    # Without the per-page read bound: each common prefix costs a read, and
    # ten of them would cut the page (the bounded-pages test below covers that).
    whole = one_page(index, prefix=prefix, delimiter=delimiter, max_keys=1000, max_fetches=1000)
    small = list_all(
        index,
        prefix=prefix,
        delimiter=delimiter,
        marker=None,
        max_keys=1,
        batch_size=batch_size,
    )
    assert not whole.truncated
    assert page_entries(whole) == [entry for page in small for entry in page_entries(page)]


DEAD_SETS = st.frozensets(KEY, max_size=60)


@settings(max_examples=400, deadline=None)
@given(
    keys=KEY_SETS,
    dead=DEAD_SETS,
    prefix=PREFIXES,
    delimiter=DELIMITERS,
    marker=MARKERS,
    max_keys=st.integers(1, 12),
    scan_rows=st.integers(1, 4),
    max_fetches=st.integers(1, 3),
)
def test_bounded_pages_over_deleted_keys_still_list_exactly_the_live_keys(
    keys: set[str],
    dead: frozenset[str],
    prefix: str,
    delimiter: str | None,
    marker: str | None,
    max_keys: int,
    scan_rows: int,
    max_fetches: int,
) -> None:
    """Pages cut short by the work bound (few rows per fetch, few fetches per page)
    continue where they stopped: nothing is lost or repeated, every page advances."""
    index = MemoryIndex(keys, dead - keys, scan_rows)
    pages = list_all(
        index,
        prefix=prefix,
        delimiter=delimiter,
        marker=marker,
        max_keys=max_keys,
        batch_size=8,
        max_fetches=max_fetches,
    )
    listed = [entry for page in pages for entry in page_entries(page)]
    assert listed == reference(keys, prefix, delimiter, marker)


def test_a_long_run_of_deleted_keys_gives_short_truncated_pages() -> None:
    dead = frozenset(f"gone/{i:04}" for i in range(100))
    index = MemoryIndex({"a", "z"}, dead, scan_rows=10)
    first = one_page(index, max_keys=5, max_fetches=3)
    assert [key for key, _ in first.items] == ["a"]
    assert first.truncated and first.cut
    assert first.last == "gone/0028"
    assert index.fetches == 3
    pages = list_all(
        index, prefix="", delimiter=None, marker=None, max_keys=5, batch_size=8, max_fetches=3
    )
    assert [key for page in pages for key, _ in page.items] == ["a", "z"]


def test_a_page_never_ends_inside_a_common_prefix_it_has_not_returned() -> None:
    dead = frozenset(f"d/{i:03}" for i in range(50))
    index = MemoryIndex({"d/zz", "e"}, dead, scan_rows=5)
    page = one_page(index, delimiter="/", max_keys=5, max_fetches=2)
    assert page.prefixes == ["d/"], "read on past the bound until the prefix had a live key"
    assert index.fetches > 2
    assert page.truncated and page.last == "d/"
    rest = one_page(index, delimiter="/", marker=page.last, max_keys=5, max_fetches=2)
    assert [key for key, _ in rest.items] == ["e"]
    assert rest.prefixes == []
