"""Object tagging: Put/Get/DeleteObjectTagging, and the x-amz-tagging header with
which a write sets the new version's tags."""

from __future__ import annotations

from granary.api.http.types import Response
from granary.api.s3.bodies import MAX_TAGGING_BYTES, parse_tagging
from granary.api.s3.bucket_ops import xml_response
from granary.api.s3.context import S3Context
from granary.api.s3.errors import S3Error
from granary.api.s3.get_ops import load_current
from granary.api.s3.tags import MAX_OBJECT_TAGS
from granary.api.s3.xml import document
from granary.model.object import Tags


def _no_version_id(ctx: S3Context) -> None:
    if ctx.query.get("versionId") not in (None, "null"):
        raise S3Error("NotImplemented", "Tagging a version by id is not implemented yet.")


async def get_object_tagging(ctx: S3Context) -> Response:
    _no_version_id(ctx)
    version = await load_current(ctx, ctx.require_key())
    tag_set = [("Tag", [("Key", key), ("Value", value)]) for key, value in version.tags.value]
    return xml_response(document("Tagging", [("TagSet", tag_set)]))


async def put_object_tagging(ctx: S3Context) -> Response:
    _no_version_id(ctx)
    tags = parse_tagging(await ctx.payload().read_all(MAX_TAGGING_BYTES), MAX_OBJECT_TAGS)
    await _set_tags(ctx, sorted(tags))  # listed in key order, as S3 does
    return Response(200)


async def delete_object_tagging(ctx: S3Context) -> Response:
    _no_version_id(ctx)
    await _set_tags(ctx, [])
    return Response(204)


async def _set_tags(ctx: S3Context, tags: Tags) -> None:
    key = ctx.require_key()
    try:
        await ctx.services.objects.set_tags(ctx.require_bucket().id, key, tags)
    except LookupError:
        raise S3Error("NoSuchKey", Key=key) from None
