"""CopyObject (blocks shared, no data copied) and UploadPartCopy."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from msgspec.structs import replace

from granary.api.http.types import Response
from granary.api.s3.bucket_ops import xml_response
from granary.api.s3.conditions import (
    evaluate_preconditions,
    format_iso8601,
    parse_copy_source_range,
)
from granary.api.s3.context import S3Context
from granary.api.s3.errors import S3Error
from granary.api.s3.get_ops import version_blocks
from granary.api.s3.headers import replace_metadata
from granary.api.s3.lock_headers import version_settings
from granary.api.s3.mpu_ops import load_upload, parse_part_number, upload_checksum_algorithm
from granary.api.s3.names import validate_object_key
from granary.api.s3.put_ops import check_write_conditions, conditional_commit
from granary.api.s3.tags import tags_from_header
from granary.api.s3.versions import checked_version_id, written_version_headers
from granary.api.s3.xml import document
from granary.block.writer import StreamDigests, write_blocks
from granary.model.object import INLINE, ObjectVersion, Tags
from granary.util.checksums import checksum_element_name, new_checksum

COPY_CONDITIONS = {
    "x-amz-copy-source-if-match": "if-match",
    "x-amz-copy-source-if-none-match": "if-none-match",
    "x-amz-copy-source-if-modified-since": "if-modified-since",
    "x-amz-copy-source-if-unmodified-since": "if-unmodified-since",
}


def parse_copy_source(value: str) -> tuple[str, str, str | None]:
    """(bucket, key, version id or None) from an x-amz-copy-source header."""
    path, _, query = value.partition("?")
    source = unquote(path).lstrip("/")
    bucket, sep, key = source.partition("/")
    if not bucket or not sep or not key:
        raise S3Error(
            "InvalidArgument",
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
            ArgumentName="x-amz-copy-source",
        )
    name, _, version_id = query.partition("=")
    if not query or (name == "versionId" and not version_id):
        return bucket, key, None
    if name != "versionId":
        raise S3Error("InvalidArgument", "Unsupported copy source parameter.", ArgumentName=name)
    return bucket, key, checked_version_id(unquote(version_id))


@dataclass(frozen=True)
class CopySource:
    bucket: str
    key: str
    version_id: str | None
    """The version the request named, if it named one."""
    version: ObjectVersion
    bucket_versioned: bool = False
    """Whether the source bucket's versioning was ever set (then it names its versions)."""


async def load_source(ctx: S3Context) -> CopySource:
    bucket_name, key, version_id = parse_copy_source(ctx.header("x-amz-copy-source") or "")
    access = ctx.services.access
    bucket = await access.bucket_for_request(bucket_name)
    if bucket is None:
        raise S3Error("NoSuchBucket", BucketName=bucket_name)
    if not bucket.permission(ctx.key_id).read:
        raise S3Error("AccessDenied")
    version = await ctx.services.objects.lookup(bucket.id, key, version_id)
    if version is None:
        if version_id is None:
            raise S3Error("NoSuchKey", Key=key)
        raise S3Error("NoSuchVersion", Key=key, VersionId=version_id)
    if not version.is_data:
        raise S3Error(
            "InvalidRequest",
            "The source of a copy request may not specifically refer to a delete marker "
            "by version id.",
        )
    conditions = {
        plain: value for header, plain in COPY_CONDITIONS.items() if (value := ctx.header(header))
    }
    if conditions and evaluate_preconditions(
        conditions, etag=version.data_meta.etag, last_modified_ms=version.timestamp, method="PUT"
    ):
        raise S3Error("PreconditionFailed")
    versioned = bucket.params is not None and bucket.params.versioning.value != ""
    return CopySource(bucket_name, key, version_id, version, versioned)


def _source_headers(copying: CopySource) -> list:
    """`x-amz-copy-source-version-id`, when the source bucket names its versions."""
    if copying.version.null and not copying.bucket_versioned:
        return []
    return [("x-amz-copy-source-version-id", copying.version.version_id)]


def _copied_tags(ctx: S3Context, source_tags: Tags) -> Tags | None:
    """The copy's tags: the source's (x-amz-tagging-directive COPY, the default) or
    the x-amz-tagging header's (REPLACE)."""
    directive = (ctx.header("x-amz-tagging-directive") or "COPY").upper()
    if directive == "COPY":
        return source_tags
    if directive == "REPLACE":
        return tags_from_header(ctx.header("x-amz-tagging"))
    raise S3Error(
        "InvalidArgument", "Unknown tagging directive.", ArgumentName="x-amz-tagging-directive"
    )


async def copy_object(ctx: S3Context) -> Response:
    bucket = ctx.require_bucket()
    key = ctx.require_key()
    validate_object_key(key)
    copying = await load_source(ctx)
    source = copying.version
    headers = ctx.http.headers.as_dict()
    directive = headers.get("x-amz-metadata-directive")
    source_meta = source.data_meta
    stored = replace_metadata(source_meta, headers, directive)
    if (copying.bucket, copying.key, copying.version_id) == (ctx.bucket_name, key, None) and (
        (directive or "COPY").upper() == "COPY" and stored == source_meta.headers
    ):
        raise S3Error(
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object to itself "
            "without changing the object's metadata, storage class, website redirect location "
            "or encryption attributes.",
        )
    meta = replace(source_meta, headers=stored)
    settings = version_settings(ctx, ctx.header, _copied_tags(ctx, source.tags.value))
    condition = await check_write_conditions(ctx, bucket.id, key, body_bytes=0)
    try:
        with conditional_commit(key):
            copied = await ctx.services.objects.copy(
                source, bucket.id, key, meta, settings, condition
            )
    except LookupError:
        raise S3Error("NoSuchKey", Key=copying.key) from None
    body = document(
        "CopyObjectResult",
        [("LastModified", format_iso8601(copied.timestamp)), ("ETag", f'"{meta.etag}"')],
    )
    response = xml_response(body)
    response.headers.extend(written_version_headers(copied))
    response.headers.extend(_source_headers(copying))
    return response


async def upload_part_copy(ctx: S3Context) -> Response:
    """Copy a byte range of an object into a part; whole blocks deduplicate."""
    part_number = parse_part_number(ctx)
    upload = await load_upload(ctx)
    source = (await load_source(ctx)).version
    size = source.data_meta.size
    range_header = ctx.header("x-amz-copy-source-range")
    if range_header is not None:
        start, end = parse_copy_source_range(range_header, size)
    else:
        start, end = 0, size - 1
    if end - start + 1 > ctx.services.settings.max_part_size:
        raise S3Error("EntityTooLarge")
    services = ctx.services
    part = await services.multipart.begin_part(upload)
    try:
        if source.kind == INLINE or size == 0:
            data = (source.inline or b"")[start : end + 1]
            chunks = _single(data)
        else:
            chunks = services.objects.stream_blocks(await version_blocks(ctx, source), start, end)
        algorithm = upload_checksum_algorithm(upload)
        digests = StreamDigests(checksum=new_checksum(algorithm) if algorithm else None)
        result = await write_blocks(
            chunks,
            block_size=services.settings.block_size,
            executor=services.executor,
            digests=digests,
            store=lambda offset, block_id, data: part.store_block(
                part_number, offset, block_id, data
            ),
            max_size=services.settings.max_part_size,
        )
        etag = digests.md5.hexdigest()
        checksum = digests.checksum.b64() if digests.checksum else None
        await services.multipart.record_part(upload, part_number, part, etag, result.size, checksum)
    except BaseException:
        await part.abort()
        raise
    children = [("LastModified", format_iso8601(part.timestamp)), ("ETag", f'"{etag}"')]
    if algorithm is not None and checksum is not None:
        children.append((checksum_element_name(algorithm), checksum))
    return xml_response(document("CopyPartResult", children))


async def _single(data: bytes):
    if data:
        yield data
