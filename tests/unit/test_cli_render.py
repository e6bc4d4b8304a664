"""The CLI's text for people: sizes, dates, tables, rights."""

from __future__ import annotations

import pytest

from granary.cli import render


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (None, "-"),
        (0, "0 B"),
        (999, "999 B"),
        (1500, "1.5 KB"),
        (2 * 10**12, "2.0 TB"),
        (123 * 10**9, "123 GB"),
        (999_999, "1.0 MB"),
        (5 * 10**18, "5000 PB"),
    ],
)
def test_human_size(size, text):
    assert render.human_size(size) == text


def test_human_time_is_utc_text():
    assert render.human_time(1_764_892_800_123) == "2025-12-05 00:00:00 UTC"
    assert render.human_time(None) == "-"


def test_table_aligns_columns():
    assert render.table(["ID", "Name"], [["GK1", "alice"], ["GK22", ""]]) == [
        "ID    Name",
        "GK1   alice",
        "GK22",
    ]


def test_key_info_hides_the_secret_unless_given():
    key = {
        "key_id": "GK1",
        "name": "alice",
        "secret": None,
        "allow_create_bucket": True,
        "buckets": [{"name": "photos", "read": True, "write": False, "owner": True}],
    }
    lines = render.key_info(key)
    assert "Can create buckets: yes" in lines
    assert any("--show-secret" in line for line in lines)
    assert lines[-1].split() == ["R", "O", "photos"]
    assert "Secret key:         s3cr3t" in render.key_info({**key, "secret": "s3cr3t"})


def test_fields_renders_nested_json():
    assert render.fields({"a": 1, "b": {"c": None, "d": [True]}}) == [
        "a: 1",
        "b:",
        "  c: -",
        "  d:",
        "    - yes",
    ]


def test_stats_shows_totals_reasons_and_each_bucket():
    result = {
        "status": "degraded",
        "nodes": 3,
        "nodes_up": 2,
        "known_nodes": 3,
        "connected_nodes": 2,
        "partitions": 256,
        "partitions_all_ok": 0,
        "partitions_quorum": 256,
        "fully_redundant": False,
        "not_fully_redundant_because": ["256 of 256 partitions have a node down"],
        "buckets": 2,
        "buckets_unknown": 1,
        "objects": 12,
        "bytes": 1_500_000,
        "unfinished_uploads": 1,
        "bucket_usage": [
            {"name": "alpha", "objects": 12, "bytes": 1_500_000, "unfinished_uploads": 1},
            {"name": "beta", "objects": None, "bytes": None, "unfinished_uploads": None},
        ],
    }
    lines = render.stats(result)
    assert "Fully redundant: NO" in lines
    assert "  - 256 of 256 partitions have a node down" in lines
    assert "Buckets: 2 (1 unknown: no node answered)" in lines
    assert lines[-3:] == [
        "Bucket  Objects  Size    Unfinished uploads",
        "alpha   12       1.5 MB  1",
        "beta    ?        ?       ?",
    ]


def test_bucket_info_shows_usage_when_given():
    bucket = {"name": "b", "id": "00", "created": 0, "keys": []}
    assert not any("Objects" in line for line in render.bucket_info(bucket, {}))
    usage = {"objects": 3, "bytes": 2000, "unfinished_uploads": 0}
    lines = render.bucket_info({**bucket, "usage": usage}, {})
    assert "Size:    2.0 KB (2000 bytes)" in lines and "Objects: 3" in lines
