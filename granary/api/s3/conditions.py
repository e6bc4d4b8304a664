"""Dates, byte ranges and conditional-request headers, as S3 evaluates them.

Timestamps are integers in milliseconds since the Unix epoch (UTC). Header
mappings are expected to have lower-case names.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Mapping
from functools import lru_cache

from granary.api.s3.errors import S3Error
from granary.api.s3.numbers import parse_decimal

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBERS = {name: number for number, name in enumerate(_MONTHS, start=1)}

_DAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = "(" + "|".join(_MONTHS) + ")"
_CLOCK = r"(\d\d):(\d\d):(\d\d)"
# Sun, 06 Nov 1994 08:49:37 GMT (a one-digit day is tolerated)
_IMF_FIXDATE = re.compile(rf"{_DAY}, (\d\d?) {_MONTH} (\d{{4}}) {_CLOCK} GMT", re.ASCII)
# Sunday, 06-Nov-94 08:49:37 GMT
_RFC850_DATE = re.compile(rf"{_LONG_DAY}, (\d\d)-{_MONTH}-(\d\d) {_CLOCK} GMT", re.ASCII)
# Sun Nov  6 08:49:37 1994
_ASCTIME_DATE = re.compile(rf"{_DAY} {_MONTH} ([ \d]\d) {_CLOCK} (\d{{4}})", re.ASCII)

# A Range end past the object is clamped, so long positions are read (up to a bound).
MAX_RANGE_DIGITS = 1000
_BYTE_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.ASCII | re.IGNORECASE)
_COPY_SOURCE_RANGE = re.compile(r"bytes=(\d+)-(\d+)", re.ASCII)


def format_http_date(ts_ms: int) -> str:
    """RFC 7231 IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`."""
    return _format_http_date(ts_ms // 1000)


@lru_cache(maxsize=1024)  # the same few seconds come back: now, and hot objects' mtimes
def _format_http_date(seconds: int) -> str:
    t = time.gmtime(seconds)
    return (
        f"{_WEEKDAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def format_iso8601(ts_ms: int) -> str:
    """The timestamp form of S3 XML, e.g. `2009-10-12T17:50:30.000Z`."""
    t = time.gmtime(ts_ms // 1000)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{ts_ms % 1000:03d}Z"
    )


def _two_digit_year(yy: int) -> int:
    """RFC 7231: a year more than 50 years ahead is the previous century's."""
    this_year = time.gmtime().tm_year
    year = this_year - this_year % 100 + yy
    return year - 100 if year > this_year + 50 else year


def _timestamp_ms(year: int, month: str, day: int, hour: int, minute: int, second: int) -> int:
    if not (1 <= day <= calendar.monthrange(year, _MONTH_NUMBERS[month])[1]):
        raise ValueError("day out of range")
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError("time out of range")
    return calendar.timegm((year, _MONTH_NUMBERS[month], day, hour, minute, second)) * 1000


def parse_http_date(value: str) -> int | None:
    """Parse any of the three HTTP date formats into milliseconds.

    Returns None for anything else: S3, like RFC 7232, ignores a conditional
    header whose date it cannot read.
    """
    text = value.strip()
    try:
        if match := _IMF_FIXDATE.fullmatch(text):
            day, month, year, hour, minute, second = match.groups()
            return _timestamp_ms(int(year), month, int(day), int(hour), int(minute), int(second))
        if match := _RFC850_DATE.fullmatch(text):
            day, month, yy, hour, minute, second = match.groups()
            year = _two_digit_year(int(yy))
            return _timestamp_ms(year, month, int(day), int(hour), int(minute), int(second))
        if match := _ASCTIME_DATE.fullmatch(text):
            month, day, hour, minute, second, year = match.groups()
            return _timestamp_ms(int(year), month, int(day), int(hour), int(minute), int(second))
    except ValueError:
        return None
    return None


def _unsatisfiable_range(value: str, size: int) -> S3Error:
    return S3Error(
        "InvalidRange",
        headers={"Content-Range": f"bytes */{size}"},
        RangeRequested=value,
        ActualObjectSize=str(size),
    )


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive `(start, end)` a `Range` header selects from `size` bytes.

    Returns None when there is no header or S3 would ignore it and send the
    whole object: malformed syntax, another unit, several ranges, or a last
    position before the first. The end is clamped to the object. Raises
    `S3Error("InvalidRange")` (416) when the range is well-formed but selects
    nothing: a start at or past the end, a zero-length suffix, or any range
    on an empty object.
    """
    if value is None:
        return None
    match = _BYTE_RANGE.fullmatch(value.strip())
    if match is None:
        return None
    first, last = match.groups()
    start = parse_decimal(first, max_digits=MAX_RANGE_DIGITS) if first else None
    end = parse_decimal(last, max_digits=MAX_RANGE_DIGITS) if last else None
    if (first and start is None) or (last and end is None):
        return None
    if start is not None:
        end = end if end is not None else size - 1
        if end < start and last:
            return None
        if start >= size:
            raise _unsatisfiable_range(value, size)
        return start, min(end, size - 1)
    if end is None:
        return None
    suffix = end
    if suffix == 0 or size == 0:
        raise _unsatisfiable_range(value, size)
    return max(size - suffix, 0), size - 1


def parse_copy_source_range(value: str, size: int) -> tuple[int, int]:
    """The inclusive `(first, last)` of an `x-amz-copy-source-range` header.

    Only the `bytes=first-last` form is allowed (InvalidArgument otherwise,
    including `first > last`), and the range must lie within the source
    object (InvalidRange otherwise); it is never clamped.
    """
    match = _COPY_SOURCE_RANGE.fullmatch(value.strip())
    first = parse_decimal(match.group(1)) if match else None
    last = parse_decimal(match.group(2)) if match else None
    if first is None or last is None:
        raise S3Error(
            "InvalidArgument",
            "The x-amz-copy-source-range value must be of the form bytes=first-last "
            "where first and last are the zero-based offsets of the first and last "
            "bytes to copy",
            ArgumentName="x-amz-copy-source-range",
            ArgumentValue=value,
        )
    if first > last:
        raise S3Error(
            "InvalidArgument",
            "The x-amz-copy-source-range first byte must not be after the last byte",
            ArgumentName="x-amz-copy-source-range",
            ArgumentValue=value,
        )
    if last >= size:
        raise S3Error("InvalidRange", RangeRequested=value, ActualObjectSize=str(size))
    return first, last


def _etag_listed(header: str, etag: str, *, weak: bool) -> bool:
    """Whether `etag` is among the comma-separated entity tags of `header`.

    Quotes are optional (S3 accepts bare ETags). A `W/` tag matches only in
    the weak comparison If-None-Match uses.
    """
    wanted = etag.strip('"')
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            if not weak:
                continue
            tag = tag[2:]
        if tag.strip('"') == wanted:
            return True
    return False


def _seconds(ts_ms: int) -> int:
    return ts_ms // 1000


def evaluate_preconditions(
    headers: Mapping[str, str], *, etag: str, last_modified_ms: int, method: str
) -> int | None:
    """Evaluate If-Match, If-Unmodified-Since, If-None-Match and If-Modified-Since.

    Follows RFC 7232 section 6, which gives S3's documented precedence: a
    present If-Match decides alone (so If-Match true with If-Unmodified-Since
    false proceeds), and a present If-None-Match decides alone (so
    If-None-Match false with If-Modified-Since true is 304). If-Modified-Since
    counts only for GET and HEAD; a failed If-None-Match is 304 for those and
    412 for other methods. Dates are compared to the second and ignored when
    unreadable.

    Returns None to proceed, or the status to answer: 304 or 412.
    """
    read = method in ("GET", "HEAD")
    if_match = headers.get("if-match")
    if if_match is not None:
        if not _etag_listed(if_match, etag, weak=False):
            return 412
    else:
        since = headers.get("if-unmodified-since")
        since_ms = parse_http_date(since) if since is not None else None
        if since_ms is not None and _seconds(last_modified_ms) > _seconds(since_ms):
            return 412
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if _etag_listed(if_none_match, etag, weak=True):
            return 304 if read else 412
    elif read:
        since = headers.get("if-modified-since")
        since_ms = parse_http_date(since) if since is not None else None
        if since_ms is not None and _seconds(last_modified_ms) <= _seconds(since_ms):
            return 304
    return None
