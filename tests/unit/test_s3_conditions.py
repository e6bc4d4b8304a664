import calendar
import email.utils

import pytest
from hypothesis import given
from hypothesis import strategies as st

from granary.api.s3.conditions import (
    evaluate_preconditions,
    format_http_date,
    format_iso8601,
    parse_copy_source_range,
    parse_http_date,
    parse_range,
)
from granary.api.s3.errors import S3Error

# Sun, 06 Nov 1994 08:49:37 GMT, the RFC 7231 example.
RFC_EXAMPLE_MS = calendar.timegm((1994, 11, 6, 8, 49, 37)) * 1000


def test_format_http_date():
    assert format_http_date(RFC_EXAMPLE_MS + 999) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert format_http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"


def test_format_iso8601():
    ts = calendar.timegm((2009, 10, 12, 17, 50, 30)) * 1000
    assert format_iso8601(ts) == "2009-10-12T17:50:30.000Z"
    assert format_iso8601(ts + 7) == "2009-10-12T17:50:30.007Z"
    assert format_iso8601(ts + 123) == "2009-10-12T17:50:30.123Z"


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
        "  Sun, 06 Nov 1994 08:49:37 GMT ",
        "Sun, 6 Nov 1994 08:49:37 GMT",
    ],
)
def test_parse_http_date_formats(value):
    assert parse_http_date(value) == RFC_EXAMPLE_MS


@pytest.mark.parametrize(
    "value",
    [
        "",
        "yesterday",
        "2009-10-12T17:50:30.000Z",
        "Sun, 06 Nov 1994 08:49:37 PST",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49 GMT",
    ],
)
def test_parse_http_date_unreadable(value):
    assert parse_http_date(value) is None


def test_parse_http_date_two_digit_year_is_recent():
    parsed = parse_http_date("Saturday, 01-Jan-00 00:00:00 GMT")
    assert parsed == calendar.timegm((2000, 1, 1, 0, 0, 0)) * 1000


@given(st.integers(min_value=0, max_value=253402300799).map(lambda s: s * 1000))
def test_http_date_round_trip(ts_ms):
    text = format_http_date(ts_ms)
    assert parse_http_date(text) == ts_ms
    assert text == email.utils.formatdate(ts_ms / 1000, usegmt=True)


# Ranges, following s3-tests' test_ranged_request_* on an 11-byte object.
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=4-7", (4, 7)),
        ("bytes=4-", (4, 10)),
        ("bytes=-7", (4, 10)),
        ("bytes=0-0", (0, 0)),
        ("bytes=10-10", (10, 10)),
        ("bytes=3-100", (3, 10)),
        ("bytes=-100", (0, 10)),
        ("bytes=0-99999999999999999999999", (0, 10)),
        ("Bytes=1-2", (1, 2)),
    ],
)
def test_parse_range(value, expected):
    assert parse_range(value, 11) == expected


def test_parse_range_big_object():
    assert parse_range("bytes=3145728-5242880", 8 * 1024 * 1024) == (3145728, 5242880)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "bytes=",
        "bytes=-",
        "bytes=a-b",
        "bytes=0-1,3-4",
        "items=0-1",
        "bytes=5-2",
        "bytes 0-1",
        "bytes=1-" + "9" * 5000,
    ],
)
def test_parse_range_ignored(value):
    assert parse_range(value, 11) is None


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("bytes=40-50", 11),
        ("bytes=11-", 11),
        ("bytes=11-20", 11),
        ("bytes=-0", 11),
        ("bytes=40-50", 0),
        ("bytes=0-", 0),
        ("bytes=-5", 0),
    ],
)
def test_parse_range_unsatisfiable(value, size):
    with pytest.raises(S3Error) as raised:
        parse_range(value, size)
    error = raised.value
    assert error.code == "InvalidRange"
    assert error.status == 416
    assert error.extra == {"RangeRequested": value, "ActualObjectSize": str(size)}
    assert error.headers == {"Content-Range": f"bytes */{size}"}


def test_parse_copy_source_range():
    assert parse_copy_source_range("bytes=0-2", 5) == (0, 2)
    assert parse_copy_source_range("bytes=4-4", 5) == (4, 4)


@pytest.mark.parametrize(
    "value",
    [
        *["0-2", "bytes=0", "bytes=hello-world", "bytes=0-bar", "bytes=hello-", "bytes=0-2,3-5"],
        *["bytes=-2", "bytes=2-", "bytes=3-1"],
    ],
)
def test_parse_copy_source_range_improper(value):
    # s3-tests: test_multipart_copy_improper_range
    with pytest.raises(S3Error) as raised:
        parse_copy_source_range(value, 5)
    assert raised.value.code == "InvalidArgument"
    assert raised.value.status == 400


@pytest.mark.parametrize("value", ["bytes=0-21", "bytes=5-5", "bytes=0-5"])
def test_parse_copy_source_range_outside_object(value):
    # s3-tests: test_multipart_copy_invalid_range
    with pytest.raises(S3Error) as raised:
        parse_copy_source_range(value, 5)
    assert raised.value.code == "InvalidRange"


ETAG = '"acbd18db4cc2f85cedef654fccc4a4d8"'
MODIFIED_MS = RFC_EXAMPLE_MS + 500
BEFORE = "Sun, 06 Nov 1994 08:49:36 GMT"
SAME_SECOND = "Sun, 06 Nov 1994 08:49:37 GMT"
AFTER = "Sun, 06 Nov 1994 08:49:38 GMT"


def evaluate(method="GET", **headers):
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    return evaluate_preconditions(named, etag=ETAG, last_modified_ms=MODIFIED_MS, method=method)


def test_no_conditions_proceeds():
    assert evaluate() is None


@pytest.mark.parametrize(
    "value",
    [ETAG, ETAG.strip('"'), "*", f'"other", {ETAG}', f' "x" ,{ETAG.strip(chr(34))} '],
)
def test_if_match_true(value):
    assert evaluate(if_match=value) is None


@pytest.mark.parametrize("value", ['"ABCORZ"', f"W/{ETAG}", ""])
def test_if_match_false(value):
    assert evaluate(if_match=value) == 412


def test_if_none_match():
    assert evaluate(if_none_match=ETAG) == 304
    assert evaluate(if_none_match=f"W/{ETAG}") == 304
    assert evaluate(if_none_match="*") == 304
    assert evaluate(if_none_match="ABCORZ") is None
    assert evaluate("HEAD", if_none_match=ETAG) == 304
    # Conditional writes: If-None-Match: * on an existing object fails.
    assert evaluate("PUT", if_none_match="*") == 412


def test_if_modified_since():
    assert evaluate(if_modified_since="Sat, 29 Oct 1994 19:43:31 GMT") is None
    assert evaluate(if_modified_since=BEFORE) is None
    assert evaluate(if_modified_since=SAME_SECOND) == 304
    assert evaluate(if_modified_since=AFTER) == 304
    assert evaluate(if_modified_since="garbage") is None
    assert evaluate("PUT", if_modified_since=AFTER) is None


def test_if_unmodified_since():
    assert evaluate(if_unmodified_since="Sat, 29 Oct 1994 19:43:31 GMT") == 412
    assert evaluate(if_unmodified_since=BEFORE) == 412
    assert evaluate(if_unmodified_since=SAME_SECOND) is None
    assert evaluate(if_unmodified_since="Sat, 29 Oct 2100 19:43:31 GMT") is None
    assert evaluate(if_unmodified_since="garbage") is None
    assert evaluate("PUT", if_unmodified_since=BEFORE) == 412


def test_if_match_true_overrides_if_unmodified_since_false():
    assert evaluate(if_match=ETAG, if_unmodified_since=BEFORE) is None


def test_if_match_false_wins_over_if_unmodified_since_true():
    assert evaluate(if_match='"x"', if_unmodified_since=AFTER) == 412


def test_if_none_match_false_and_if_modified_since_true_is_304():
    # S3 docs: If-None-Match false (the ETag matches) decides, whatever the date says.
    assert evaluate(if_none_match=ETAG, if_modified_since=BEFORE) == 304


def test_if_none_match_true_overrides_if_modified_since_false():
    assert evaluate(if_none_match='"other"', if_modified_since=AFTER) is None


def test_precondition_failure_before_not_modified():
    assert evaluate(if_match='"x"', if_none_match=ETAG) == 412
    assert evaluate(if_unmodified_since=BEFORE, if_modified_since=AFTER) == 412


@pytest.mark.parametrize(
    "value", ["bytes=0-" + "9" * 5000, "bytes=" + "9" * 5000 + "-1", "bytes=\u00b2-3"]
)
def test_copy_source_range_of_unreadable_numbers_is_invalid_argument(value):
    with pytest.raises(S3Error) as caught:
        parse_copy_source_range(value, 100)
    assert (caught.value.code, caught.value.status) == ("InvalidArgument", 400)
