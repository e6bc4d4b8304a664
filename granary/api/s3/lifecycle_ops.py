"""Bucket lifecycle configuration: Put/Get/DeleteBucketLifecycleConfiguration, and the
x-amz-expiration header that tells a reader when its object expires. The rules are
applied by the lifecycle worker (granary/model/lifecycle_worker.py)."""

from __future__ import annotations

from granary.api.http.types import Response
from granary.api.s3.bucket_ops import xml_response
from granary.api.s3.conditions import format_http_date
from granary.api.s3.context import S3Context
from granary.api.s3.errors import S3Error
from granary.api.s3.headers import require_digest_header
from granary.api.s3.lifecycle_xml import MAX_LIFECYCLE_BYTES, parse_lifecycle, render_rules
from granary.api.s3.xml import document
from granary.model.access import AccessError
from granary.model.lifecycle import Lifecycle, expiration_header
from granary.model.object import ObjectVersion


def bucket_lifecycle(ctx: S3Context) -> Lifecycle | None:
    params = ctx.require_bucket().params
    return None if params is None else params.lifecycle.value


async def get_bucket_lifecycle(ctx: S3Context) -> Response:
    rules = bucket_lifecycle(ctx)
    if not rules:
        raise S3Error("NoSuchLifecycleConfiguration", BucketName=ctx.bucket_name or "")
    return xml_response(document("LifecycleConfiguration", render_rules(rules)))


async def put_bucket_lifecycle(ctx: S3Context) -> Response:
    require_digest_header(ctx.http.headers)
    rules = parse_lifecycle(await ctx.payload().read_all(MAX_LIFECYCLE_BYTES))
    await _set(ctx, rules)
    return Response(200)


async def delete_bucket_lifecycle(ctx: S3Context) -> Response:
    """Succeeds (204) on a bucket without rules too, as in S3."""
    await _set(ctx, None)
    return Response(204)


async def _set(ctx: S3Context, rules: Lifecycle | None) -> None:
    try:
        await ctx.services.access.set_lifecycle(ctx.require_bucket().id, rules)
    except AccessError:
        raise S3Error("NoSuchBucket", BucketName=ctx.bucket_name or "") from None


def expiration_headers(ctx: S3Context, key: str, version: ObjectVersion) -> list[tuple[str, str]]:
    """x-amz-expiration of a current version a rule will expire."""
    rules = bucket_lifecycle(ctx)
    if not rules:
        return []
    found = expiration_header(rules, key, version, ctx.services.settings.lifecycle_day_ms)
    if found is None:
        return []
    expiry, rule_id = found
    return [("x-amz-expiration", f'expiry-date="{format_http_date(expiry)}", rule-id="{rule_id}"')]
