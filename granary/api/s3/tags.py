"""The tag set a write gives its new version: the `x-amz-tagging` header."""

from __future__ import annotations

from urllib.parse import parse_qsl

from granary.api.s3.bodies import validate_tags
from granary.api.s3.errors import S3Error
from granary.model.object import Tags

MAX_OBJECT_TAGS = 10
MAX_TAGGING_HEADER_CHARS = 8 << 10


def tags_from_header(value: str | None) -> Tags | None:
    """The tag set of an `x-amz-tagging` header (a URL-encoded query string), if any,
    in key order (as S3 lists an object's tags)."""
    if value is None:
        return None
    if len(value) > MAX_TAGGING_HEADER_CHARS:
        raise S3Error("InvalidTag", "The x-amz-tagging header is too long.")
    tags = parse_qsl(value, keep_blank_values=True)  # a key alone has an empty value
    validate_tags(tags, MAX_OBJECT_TAGS)
    return sorted(tags)
