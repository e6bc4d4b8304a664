"""Object metadata headers: what a write stores and what a read returns. Sans-IO."""

from __future__ import annotations

import re
from collections.abc import Mapping

from granary.api.http.types import Headers
from granary.api.s3.conditions import format_http_date
from granary.api.s3.errors import S3Error
from granary.api.s3.names import USER_METADATA_PREFIX, parse_user_metadata
from granary.model.object import ObjectMeta

DEFAULT_CONTENT_TYPE = "binary/octet-stream"
STORED_STANDARD_HEADERS = (
    "content-type",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
    "x-amz-website-redirect-location",
)
STORAGE_CLASSES = frozenset(
    {
        "STANDARD",
        "REDUCED_REDUNDANCY",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER",
        "DEEP_ARCHIVE",
        "GLACIER_IR",
        "OUTPOSTS",
        "SNOW",
        "EXPRESS_ONEZONE",
    }
)
# Visible Latin-1 characters, spaces and tabs: what a header value may hold.
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\xa0-\xff]*")
# response-* query parameters that override a GET's headers.
RESPONSE_OVERRIDES = {
    "response-content-type": "content-type",
    "response-content-language": "content-language",
    "response-expires": "expires",
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
}


def metadata_from_request(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """The headers an object keeps from the request that writes it."""
    stored = [(name, headers[name]) for name in STORED_STANDARD_HEADERS if name in headers]
    stored = [(n, v) for n, v in (_without_aws_chunked(n, v) for n, v in stored) if v]
    if "content-type" not in headers:
        stored.insert(0, ("content-type", DEFAULT_CONTENT_TYPE))
    storage_class = headers.get("x-amz-storage-class")
    if storage_class is not None:
        if storage_class not in STORAGE_CLASSES:
            raise S3Error("InvalidStorageClass")
        if storage_class != "STANDARD":
            stored.append(("x-amz-storage-class", storage_class))
    for name, value in parse_user_metadata(headers).items():
        stored.append((USER_METADATA_PREFIX + name, _as_text(value)))
    return stored


def _as_text(raw: str) -> str:
    """A header value (bytes as latin-1) as the text the client sent, UTF-8 if it is."""
    if raw.isascii():
        return raw
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return raw


def _as_header(text: str) -> str:
    """Text back into a header value: latin-1 when it fits, else its UTF-8 bytes."""
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8").decode("latin-1")
    return text


def _without_aws_chunked(name: str, value: str) -> tuple[str, str]:
    """aws-chunked is how the body was framed on the wire, not how it is encoded."""
    if name != "content-encoding":
        return name, value
    codings = [c.strip() for c in value.split(",") if c.strip().lower() != "aws-chunked"]
    return name, ", ".join(codings)


def storage_class(meta: ObjectMeta) -> str:
    for name, value in meta.headers:
        if name == "x-amz-storage-class":
            return value
    return "STANDARD"


def object_headers(
    meta: ObjectMeta, last_modified_ms: int, query: Mapping[str, str]
) -> list[tuple[str, str]]:
    """The headers of a GET or HEAD answer, with response-* overrides applied."""
    headers = [
        ("etag", f'"{meta.etag}"'),
        ("last-modified", format_http_date(last_modified_ms)),
        ("accept-ranges", "bytes"),
    ]
    overridden = {RESPONSE_OVERRIDES[name] for name in query if name in RESPONSE_OVERRIDES}
    headers.extend(
        (name, _as_header(value)) for name, value in meta.headers if name not in overridden
    )
    headers.extend(
        (header, _override_value(name, query[name]))
        for name, header in RESPONSE_OVERRIDES.items()
        if name in query
    )
    return headers


def _override_value(name: str, value: str) -> str:
    """A response-* value fit for a header line: Latin-1 text without control characters."""
    if not _HEADER_VALUE.fullmatch(value):
        raise S3Error(
            "InvalidArgument",
            f"The {name} parameter is not a valid header value.",
            ArgumentName=name,
            ArgumentValue=value.encode("unicode_escape").decode("ascii"),
        )
    return value


def replace_metadata(
    source: ObjectMeta, headers: Mapping[str, str], directive: str | None
) -> list[tuple[str, str]]:
    """The metadata of a copy: the source's (COPY) or the request's (REPLACE)."""
    directive = (directive or "COPY").upper()
    if directive == "COPY":
        kept = [(n, v) for n, v in source.headers if n != "x-amz-storage-class"]
        requested = headers.get("x-amz-storage-class")
        if requested is not None:
            metadata_from_request({"x-amz-storage-class": requested})
            if requested != "STANDARD":
                kept.append(("x-amz-storage-class", requested))
        return kept
    if directive == "REPLACE":
        return metadata_from_request(headers)
    raise S3Error(
        "InvalidArgument", "Unknown metadata directive.", ArgumentName="x-amz-metadata-directive"
    )


def require_digest_header(headers: Headers) -> None:
    """S3 requires a Content-MD5 or a checksum on some calls (DeleteObjects, the
    object lock calls): InvalidRequest without one."""
    if "content-md5" not in headers and not any(
        name.startswith("x-amz-checksum-") or name == "x-amz-sdk-checksum-algorithm"
        for name, _ in headers.items()
    ):
        raise S3Error("InvalidRequest", "Missing required header for this request: Content-MD5")
