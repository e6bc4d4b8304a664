"""Bucket names, object keys and user metadata: what S3 accepts."""

from __future__ import annotations

import re
from collections.abc import Mapping

from granary.api.s3.errors import S3Error

MAX_KEY_BYTES = 1024
MAX_USER_METADATA_BYTES = 2048
USER_METADATA_PREFIX = "x-amz-meta-"

_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)
_IPV4_LIKE = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", re.ASCII)
# Only the reservations that change how clients address a bucket: punycode
# host labels, access-point and Multi-Region aliases, and directory buckets
# (SDKs switch to S3 Express for a name ending in "--x-s3").
_RESERVED_PREFIXES = ("xn--",)
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3")


def validate_bucket_name(name: str) -> None:
    """Raise `S3Error("InvalidBucketName")` unless `name` follows S3's rules.

    3 to 63 characters of lower-case letters, digits, dots and hyphens,
    starting and ending with a letter or digit; no empty or hyphen-edged
    label between dots (so no "..", ".-" or "-."), not an IPv4 address, and
    none of the reserved prefixes and suffixes.
    """
    if (
        _BUCKET_NAME.fullmatch(name) is None
        or ".." in name
        or ".-" in name
        or "-." in name
        or _IPV4_LIKE.fullmatch(name) is not None
        or name.startswith(_RESERVED_PREFIXES)
        or name.endswith(_RESERVED_SUFFIXES)
    ):
        raise S3Error("InvalidBucketName", BucketName=name)


def validate_object_key(key: str) -> None:
    """Raise unless `key` is a usable object key.

    Empty or not encodable as UTF-8 (a lone surrogate): InvalidArgument.
    Longer than 1,024 bytes of UTF-8: KeyTooLongError. Any other character,
    control characters included, is allowed, as in S3.
    """
    if not key:
        raise S3Error("InvalidArgument", "The object key must not be empty.")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise S3Error("InvalidArgument", "The object key is not valid UTF-8.") from None
    if size > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", Size=str(size), MaxSizeAllowed=str(MAX_KEY_BYTES))


def parse_user_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """The `x-amz-meta-*` headers as `{name: value}`, names lower-cased without the prefix.

    Raises `S3Error("MetadataTooLarge")` when the names and values together
    exceed 2 KB of UTF-8, S3's limit, and InvalidArgument for a header that
    is just the prefix.
    """
    metadata: dict[str, str] = {}
    size = 0
    for header, value in headers.items():
        lower = header.lower()
        if not lower.startswith(USER_METADATA_PREFIX):
            continue
        name = lower[len(USER_METADATA_PREFIX) :]
        if not name:
            raise S3Error("InvalidArgument", "A user metadata header must have a name.")
        metadata[name] = value
        size += len(name.encode("utf-8", "surrogatepass"))
        size += len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_USER_METADATA_BYTES:
        raise S3Error(
            "MetadataTooLarge", Size=str(size), MaxSizeAllowed=str(MAX_USER_METADATA_BYTES)
        )
    return metadata
