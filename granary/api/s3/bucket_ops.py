"""Bucket operations: list, create, head, delete, location, versioning."""

from __future__ import annotations

from granary.api.http.types import Response
from granary.api.s3.bodies import (
    MAX_TAGGING_BYTES,
    MAX_VERSIONING_BYTES,
    parse_create_bucket,
    parse_tagging,
    parse_versioning,
)
from granary.api.s3.conditions import format_iso8601
from granary.api.s3.context import S3Context
from granary.api.s3.errors import S3Error
from granary.api.s3.names import validate_bucket_name
from granary.api.s3.numbers import integer_argument
from granary.api.s3.xml import S3_XMLNS, XML_DECLARATION, document, escape
from granary.model.access import AccessError
from granary.model.buckets import VERSIONING_SUSPENDED

MAX_CREATE_BUCKET_BODY = 64 * 1024


def xml_response(body: bytes, status: int = 200) -> Response:
    return Response(status, [("content-type", "application/xml")], body)


def owner_node(ctx: S3Context) -> tuple[str, list]:
    key_id = ctx.key_id or ""
    return ("Owner", [("ID", key_id), ("DisplayName", key_id)])


async def list_buckets(ctx: S3Context) -> Response:
    """The buckets this key may use, by name, paginated with max-buckets."""
    key_id = ctx.key_id
    prefix = ctx.query.get("prefix", "")
    after = ctx.query.get("continuation-token", "")
    limit = integer_argument(
        ctx.query.get("max-buckets", "10000"),
        "max-buckets",
        minimum=1,
        maximum=10000,
        message="max-buckets must be between 1 and 10000",
    )
    visible = [
        (name, bucket.params)
        for name, bucket in ctx.services.access.list_buckets()
        if bucket.params is not None
        and bucket.permission(key_id).any
        and name.startswith(prefix)
        and name > after
    ]
    page = visible[:limit]
    buckets = [
        ("Bucket", [("Name", name), ("CreationDate", format_iso8601(params.created))])
        for name, params in page
    ]
    children = [
        owner_node(ctx),
        ("Buckets", buckets),
        ("ContinuationToken", page[-1][0]) if len(visible) > len(page) else None,
        ("Prefix", prefix) if prefix else None,
    ]
    return xml_response(document("ListAllMyBucketsResult", children))


async def create_bucket(ctx: S3Context) -> Response:
    name = ctx.require_bucket_name()
    validate_bucket_name(name)
    body = await ctx.payload().read_all(MAX_CREATE_BUCKET_BODY)
    location = parse_create_bucket(body)
    region = ctx.services.settings.region
    if location is not None and location != region:
        raise S3Error(
            "InvalidLocationConstraint",
            LocationConstraint=location,
        )
    key = ctx.access_key
    created = Response(200, [("location", f"/{name}")])
    if key.params is None or not key.params.allow_create_bucket.value:
        existing = ctx.services.access.resolve_bucket(name)
        if existing is not None and existing.permission(key.key_id).owner:
            return _already_owned(region, name, created)
        raise S3Error("AccessDenied", "This access key may not create buckets.")
    lock = (ctx.header("x-amz-bucket-object-lock-enabled") or "").lower() == "true"
    try:
        await ctx.services.access.create_bucket(name, key.key_id, object_lock=lock)
    except AccessError as error:
        if error.reason == "owned":
            return _already_owned(region, name, created)
        code = "OperationAborted" if error.reason == "conflict" else "BucketAlreadyExists"
        raise S3Error(code, BucketName=name) from None
    return created


def _already_owned(region: str, name: str, created: Response) -> Response:
    """Creating a bucket one owns already: us-east-1 answers as if it were created (and
    leaves the bucket as it is), every other region BucketAlreadyOwnedByYou."""
    if region == "us-east-1":
        return created
    raise S3Error("BucketAlreadyOwnedByYou", BucketName=name)


async def head_bucket(ctx: S3Context) -> Response:
    return Response(200, [("x-amz-bucket-region", ctx.services.settings.region)])


async def delete_bucket(ctx: S3Context) -> Response:
    name = ctx.require_bucket_name()
    try:
        await ctx.services.access.delete_bucket(name)
    except AccessError as error:
        if error.reason == "not-empty":
            raise S3Error("BucketNotEmpty", BucketName=name) from None
        if error.reason == "conflict":
            raise S3Error("OperationAborted", BucketName=name) from None
        raise S3Error("NoSuchBucket", BucketName=name) from None
    return Response(204)


async def get_bucket_location(ctx: S3Context) -> Response:
    region = ctx.services.settings.region
    # AWS answers an empty constraint for us-east-1.
    constraint = "" if region == "us-east-1" else escape(region)
    body = (
        f'{XML_DECLARATION}<LocationConstraint xmlns="{S3_XMLNS}">{constraint}</LocationConstraint>'
    )
    return xml_response(body.encode())


async def get_bucket_versioning(ctx: S3Context) -> Response:
    params = ctx.require_bucket().params
    status = "" if params is None else params.versioning.value
    return xml_response(document("VersioningConfiguration", [("Status", status)] if status else []))


async def put_bucket_versioning(ctx: S3Context) -> Response:
    bucket = ctx.require_bucket()
    status = parse_versioning(await ctx.payload().read_all(MAX_VERSIONING_BYTES))
    params = bucket.params
    if (
        status == VERSIONING_SUSPENDED
        and params is not None
        and params.object_lock.value is not None
    ):
        raise S3Error(
            "InvalidBucketState",
            "An Object Lock configuration is present on this bucket, so the versioning "
            "state cannot be changed.",
        )
    if status is not None:
        try:
            await ctx.services.access.set_versioning(bucket.id, status)
        except AccessError:
            raise S3Error("NoSuchBucket", BucketName=ctx.require_bucket_name()) from None
    return Response(200)


async def get_bucket_tagging(ctx: S3Context) -> Response:
    params = ctx.require_bucket().params
    tags = None if params is None else params.tags.value
    if tags is None:
        raise S3Error("NoSuchTagSet", BucketName=ctx.require_bucket_name())
    tag_set = [("Tag", [("Key", key), ("Value", value)]) for key, value in tags]
    return xml_response(document("Tagging", [("TagSet", tag_set)]))


async def put_bucket_tagging(ctx: S3Context) -> Response:
    bucket = ctx.require_bucket()
    tags = parse_tagging(await ctx.payload().read_all(MAX_TAGGING_BYTES))
    await _set_tags(ctx, bucket.id, tags)
    return Response(204)


async def delete_bucket_tagging(ctx: S3Context) -> Response:
    await _set_tags(ctx, ctx.require_bucket().id, None)
    return Response(204)


async def _set_tags(ctx: S3Context, bucket_id: bytes, tags: list[tuple[str, str]] | None) -> None:
    try:
        await ctx.services.access.set_bucket_tags(bucket_id, tags)
    except AccessError:
        raise S3Error("NoSuchBucket", BucketName=ctx.require_bucket_name()) from None
