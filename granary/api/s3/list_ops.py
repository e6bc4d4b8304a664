"""ListObjects (v1, v2), ListObjectVersions and ListMultipartUploads."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import quote

from granary.api.http.types import Response
from granary.api.s3.bucket_ops import owner_node, xml_response
from granary.api.s3.conditions import format_iso8601
from granary.api.s3.context import S3Context
from granary.api.s3.errors import S3Error
from granary.api.s3.headers import storage_class
from granary.api.s3.listing import Fetch, Page, list_page
from granary.api.s3.numbers import parse_decimal
from granary.api.s3.upload_listing import upload_page
from granary.api.s3.version_listing import version_page
from granary.api.s3.versions import checked_version_id
from granary.api.s3.xml import document
from granary.model.object import Object, ObjectVersion

DEFAULT_MAX_KEYS = 1000


def _max_keys(ctx: S3Context, name: str = "max-keys") -> int:
    value = ctx.query.get(name)
    if value is None:
        return DEFAULT_MAX_KEYS
    number = parse_decimal(value.removeprefix("-"))
    if number is None:
        raise S3Error(
            "InvalidArgument",
            f"Provided {name} not an integer or within integer range",
            ArgumentName=name,
            ArgumentValue=value,
        )
    if value.startswith("-") and number > 0:
        raise S3Error(
            "InvalidArgument",
            f"{name} must not be negative",
            ArgumentName=name,
            ArgumentValue=value,
        )
    return min(number, DEFAULT_MAX_KEYS)


def _encoder(ctx: S3Context):
    encoding = ctx.query.get("encoding-type")
    if encoding is None:
        return lambda text: text
    if encoding != "url":
        raise S3Error(
            "InvalidArgument",
            "Invalid Encoding Method specified in Request",
            ArgumentName="encoding-type",
            ArgumentValue=encoding,
        )
    return lambda text: quote(text, safe="/")


def _fetch_rows(ctx: S3Context, row_filter: str) -> Fetch[Object]:
    """Reads of the bucket's object rows that pass `row_filter` (see ObjectTable)."""
    bucket_id = ctx.require_bucket().id
    objects = ctx.services.objects

    async def fetch(start: bytes | None, limit: int) -> tuple[list[tuple[str, Object]], str | None]:
        found = await objects.list(bucket_id, start, limit, row_filter)
        reached = None if found.horizon is None else found.horizon.decode()
        return [(entry.key, entry) for entry in found.entries], reached

    return fetch


async def _object_page(ctx: S3Context, marker: str | None) -> Page:
    return await list_page(
        _fetch_rows(ctx, "data"),
        prefix=ctx.query.get("prefix", ""),
        delimiter=ctx.query.get("delimiter") or None,
        marker=marker,
        max_keys=_max_keys(ctx),
    )


def _contents(ctx: S3Context, key: str, version: ObjectVersion, encode, with_owner: bool):
    meta = version.data_meta
    return (
        "Contents",
        [
            ("Key", encode(key)),
            ("LastModified", format_iso8601(version.timestamp)),
            ("ETag", f'"{meta.etag}"'),
            ("Size", meta.size),
            owner_node(ctx) if with_owner else None,
            ("StorageClass", storage_class(meta)),
        ],
    )


def _common(page: Page, encode) -> list:
    return [("CommonPrefixes", [("Prefix", encode(p))]) for p in page.prefixes]


def _head(ctx: S3Context, encode, *, encode_prefix: bool = True) -> list:
    """The elements every listing starts with.

    ListObjects (v1) sends its Prefix as given even with encoding-type=url:
    that is what AWS does and what clients decode.
    """
    delimiter = ctx.query.get("delimiter")
    prefix = ctx.query.get("prefix", "")
    return [
        ("Name", ctx.bucket_name),
        ("Prefix", encode(prefix) if encode_prefix else prefix),
        ("Delimiter", encode(delimiter) if delimiter else None),
        ("EncodingType", ctx.query.get("encoding-type")),
    ]


async def list_objects_v1(ctx: S3Context) -> Response:
    encode = _encoder(ctx)
    marker = ctx.query.get("marker") or None
    page = await _object_page(ctx, marker)
    children = [
        *_head(ctx, encode, encode_prefix=False),
        ("Marker", encode(marker or "")),
        ("MaxKeys", _max_keys(ctx)),
        ("IsTruncated", page.truncated),
        # S3 gives NextMarker only with a delimiter (else clients take the last
        # key); a page cut short by the work bound may end past its last key.
        ("NextMarker", encode(page.last))
        if page.truncated and (ctx.query.get("delimiter") or page.cut)
        else None,
        *(
            _contents(ctx, key, entry.current(), encode, with_owner=True)
            for key, entry in page.items
        ),
        *_common(page, encode),
    ]
    return xml_response(document("ListBucketResult", children))


def _encode_token(last: str) -> str:
    return base64.urlsafe_b64encode(last.encode()).decode()


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise S3Error(
            "InvalidArgument",
            "The continuation token provided is incorrect",
            ArgumentName="continuation-token",
        ) from None


async def list_objects_v2(ctx: S3Context) -> Response:
    encode = _encoder(ctx)
    token = ctx.query.get("continuation-token")
    start_after = ctx.query.get("start-after")
    marker = _decode_token(token) if token is not None else (start_after or None)
    page = await _object_page(ctx, marker)
    with_owner = ctx.query.get("fetch-owner") == "true"
    children = [
        *_head(ctx, encode),
        ("MaxKeys", _max_keys(ctx)),
        ("KeyCount", page.count),
        ("IsTruncated", page.truncated),
        ("ContinuationToken", token),
        ("NextContinuationToken", _encode_token(page.last)) if page.truncated else None,
        ("StartAfter", encode(start_after)) if start_after is not None else None,
        *(_contents(ctx, key, entry.current(), encode, with_owner) for key, entry in page.items),
        *_common(page, encode),
    ]
    return xml_response(document("ListBucketResult", children))


async def list_object_versions(ctx: S3Context) -> Response:
    encode = _encoder(ctx)
    key_marker = ctx.query.get("key-marker") or None
    version_id_marker = ctx.query.get("version-id-marker") or None
    if version_id_marker is not None:
        if key_marker is None:
            raise S3Error(
                "InvalidArgument",
                "A version-id marker cannot be specified without a key marker.",
                ArgumentName="version-id-marker",
                ArgumentValue=version_id_marker,
            )
        checked_version_id(version_id_marker)
    bucket_id = ctx.require_bucket().id
    objects = ctx.services.objects
    page = await version_page(
        _fetch_rows(ctx, "versions"),
        lambda key: objects.get(bucket_id, key),
        prefix=ctx.query.get("prefix", ""),
        delimiter=ctx.query.get("delimiter") or None,
        key_marker=key_marker,
        version_id_marker=version_id_marker,
        max_keys=_max_keys(ctx),
    )
    entries = [
        _version_entry(ctx, key, version, latest, encode) for key, version, latest in page.versions
    ]
    children = [
        *_head(ctx, encode),
        ("KeyMarker", encode(key_marker or "")),
        ("VersionIdMarker", version_id_marker or ""),
        ("MaxKeys", _max_keys(ctx)),
        ("IsTruncated", page.truncated),
        ("NextKeyMarker", encode(page.next_key_marker or "")) if page.truncated else None,
        ("NextVersionIdMarker", page.next_version_id_marker)
        if page.truncated and page.next_version_id_marker
        else None,
        *entries,
        *(("CommonPrefixes", [("Prefix", encode(p))]) for p in page.prefixes),
    ]
    return xml_response(document("ListVersionsResult", children))


def _version_entry(ctx: S3Context, key: str, version: ObjectVersion, latest: bool, encode):
    common = [
        ("Key", encode(key)),
        ("VersionId", version.version_id),
        ("IsLatest", latest),
        ("LastModified", format_iso8601(version.timestamp)),
    ]
    if not version.is_data:
        return ("DeleteMarker", [*common, owner_node(ctx)])
    meta = version.data_meta
    return (
        "Version",
        [
            *common,
            ("ETag", f'"{meta.etag}"'),
            ("Size", meta.size),
            owner_node(ctx),
            ("StorageClass", storage_class(meta)),
        ],
    )


async def list_multipart_uploads(ctx: S3Context) -> Response:
    encode = _encoder(ctx)
    bucket_id = ctx.require_bucket().id
    key_marker = ctx.query.get("key-marker") or None
    upload_id_marker = ctx.query.get("upload-id-marker") or None
    max_uploads = _max_keys(ctx, "max-uploads")
    multipart = ctx.services.multipart
    page = await upload_page(
        lambda start, limit: multipart.list_uploads(bucket_id, start, limit),
        prefix=ctx.query.get("prefix", ""),
        delimiter=ctx.query.get("delimiter") or None,
        key_marker=key_marker,
        upload_id_marker=upload_id_marker,
        max_uploads=max_uploads,
    )
    uploads = [
        (
            "Upload",
            [
                ("Key", encode(upload.key)),
                ("UploadId", upload.upload_id.hex()),
                ("Initiator", [("ID", ctx.key_id), ("DisplayName", ctx.key_id)]),
                owner_node(ctx),
                ("StorageClass", "STANDARD"),
                ("Initiated", format_iso8601(upload.timestamp)),
            ],
        )
        for upload in page.uploads
    ]
    children = [
        ("Bucket", ctx.bucket_name),
        ("KeyMarker", encode(key_marker or "")),
        ("UploadIdMarker", upload_id_marker or ""),
        ("NextKeyMarker", encode(page.next_key_marker)) if page.truncated else None,
        ("NextUploadIdMarker", page.next_upload_id_marker) if page.truncated else None,
        ("Prefix", encode(ctx.query.get("prefix", ""))),
        ("Delimiter", ctx.query.get("delimiter")),
        ("MaxUploads", max_uploads),
        ("IsTruncated", page.truncated),
        ("EncodingType", ctx.query.get("encoding-type")),
        *uploads,
        *(("CommonPrefixes", [("Prefix", encode(p))]) for p in page.prefixes),
    ]
    return xml_response(document("ListMultipartUploadsResult", children))
