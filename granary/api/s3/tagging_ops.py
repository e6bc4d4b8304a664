"""Object tagging: Put/Get/DeleteObjectTagging, and the x-amz-tagging header with
which a write sets the new version's tags."""

from __future__ import annotations

from granary.api.http.types import Response
from granary.api.s3.bodies import MAX_TAGGING_BYTES, parse_tagging
from granary.api.s3.bucket_ops import xml_response
from granary.api.s3.context import S3Context
from granary.api.s3.errors import S3Error
from granary.api.s3.tags import MAX_OBJECT_TAGS
from granary.api.s3.versions import load_version, version_headers
from granary.api.s3.xml import document
from granary.model.object import Tags


async def get_object_tagging(ctx: S3Context) -> Response:
    version = await load_version(ctx, ctx.require_key())
    tag_set = [("Tag", [("Key", key), ("Value", value)]) for key, value in version.tags.value]
    response = xml_response(document("Tagging", [("TagSet", tag_set)]))
    response.headers.extend(version_headers(ctx, version))
    return response


async def put_object_tagging(ctx: S3Context) -> Response:
    tags = parse_tagging(await ctx.payload().read_all(MAX_TAGGING_BYTES), MAX_OBJECT_TAGS)
    return await _set_tags(ctx, sorted(tags), 200)  # listed in key order, as S3 does


async def delete_object_tagging(ctx: S3Context) -> Response:
    return await _set_tags(ctx, [], 204)


async def _set_tags(ctx: S3Context, tags: Tags, status: int) -> Response:
    """Tag the version the request names (`load_version`: its errors are S3's)."""
    version = await load_version(ctx, ctx.require_key())
    try:
        await ctx.services.objects.set_tags(
            ctx.require_bucket().id, ctx.require_key(), tags, version.version_id
        )
    except LookupError:  # deleted meanwhile
        raise S3Error("NoSuchKey", Key=ctx.require_key()) from None
    return Response(status, version_headers(ctx, version))
