"""Sans-IO tests of `version_page`: pages of ListObjectVersions that end inside a key
walk every version exactly once, in S3's order, with prefixes folded."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from granary.api.s3.version_listing import version_page
from granary.model.object import COMPLETE, INLINE, Object, ObjectMeta, ObjectVersion


def version(key_index: int, n: int) -> ObjectVersion:
    return ObjectVersion(
        bytes([key_index, n]) * 8,
        n + 1,
        COMPLETE,
        kind=INLINE,
        meta=ObjectMeta(1, "e", []),
        inline=b"x",
        null=False,
    )


def rows_of(counts: dict[str, int]) -> dict[str, Object]:
    return {
        key: Object(b"b", key, [version(index, n) for n in range(count)])
        for index, (key, count) in enumerate(sorted(counts.items()))
    }


def walk(rows: dict[str, Object], max_keys: int, delimiter: str | None = None):
    """Every page from the start; (key, version id, latest) and prefixes, in order."""

    async def fetch(start: bytes | None, limit: int):
        keys = [k for k in sorted(rows) if start is None or k.encode() >= start]
        return [(k, rows[k]) for k in keys[:limit]], (
            keys[limit - 1] if len(keys) > limit else None
        )

    async def get_row(key: str):
        return rows.get(key)

    async def pages():
        seen, prefixes = [], []
        key_marker = version_marker = None
        for _ in range(1000):
            page = await version_page(
                fetch,
                get_row,
                prefix="",
                delimiter=delimiter,
                key_marker=key_marker,
                version_id_marker=version_marker,
                max_keys=max_keys,
            )
            assert page.count <= max_keys
            seen += [(key, v.version_id, latest) for key, v, latest in page.versions]
            prefixes += page.prefixes
            if not page.truncated:
                return seen, prefixes
            key_marker, version_marker = page.next_key_marker, page.next_version_id_marker
        raise AssertionError("the pages never ended")

    return asyncio.run(pages())


@settings(max_examples=60, deadline=None)
@given(
    counts=st.dictionaries(st.sampled_from(["a", "b", "c/x", "c/y", "d"]), st.integers(1, 5)),
    max_keys=st.integers(1, 7),
)
def test_pages_walk_every_version_once_newest_first(counts, max_keys):
    rows = rows_of(counts)
    expected = [
        (key, v.version_id, index == 0)
        for key in sorted(rows)
        for index, v in enumerate(rows[key].listed())
    ]
    seen, prefixes = walk(rows, max_keys)
    assert seen == expected and prefixes == []


def test_a_delimiter_folds_keys_into_one_prefix_counted_once():
    rows = rows_of({"a": 2, "c/x": 3, "c/y": 1, "d": 1})
    seen, prefixes = walk(rows, 2, delimiter="/")
    assert prefixes == ["c/"]
    assert [(key, latest) for key, _, latest in seen] == [("a", True), ("a", False), ("d", True)]
