"""Object lock at the API: a bucket's configuration (Get/PutObjectLockConfiguration),
a version's retention and legal hold (Get/PutObjectRetention, Get/PutObjectLegalHold),
and the headers with which a write locks the version it makes.

Changes to an existing version's lock are decided in a round on the object's
row (`Objects.change_version`, granary/model/lock.py says why that is safe).
"""

from __future__ import annotations

from collections.abc import Callable

from msgspec.structs import replace

from granary.api.http.types import Response
from granary.api.s3.bodies import (
    MAX_LOCK_BYTES,
    parse_legal_hold,
    parse_lock_configuration,
    parse_retention,
)
from granary.api.s3.bucket_ops import xml_response
from granary.api.s3.conditions import format_iso8601
from granary.api.s3.context import S3Context
from granary.api.s3.errors import S3Error
from granary.api.s3.headers import require_digest_header
from granary.api.s3.lock_headers import bucket_lock, bypasses_governance, until_ms
from granary.api.s3.versions import load_version, version_headers
from granary.api.s3.xml import document
from granary.model.buckets import VERSIONING_ENABLED
from granary.model.lock import (
    MODES,
    LockConfig,
    LockRefused,
    Retention,
    check_retention_change,
)
from granary.model.object import ObjectVersion
from granary.table.table import ConditionalConflict, Round


def _require_lock(ctx: S3Context) -> LockConfig:
    lock = bucket_lock(ctx)
    if lock is None:
        raise S3Error("InvalidRequest", "Bucket is missing Object Lock Configuration")
    return lock


async def get_object_lock_configuration(ctx: S3Context) -> Response:
    lock = bucket_lock(ctx)
    if lock is None:
        raise S3Error("ObjectLockConfigurationNotFoundError", BucketName=ctx.bucket_name or "")
    children: list = [("ObjectLockEnabled", "Enabled")]
    default = lock.default
    if default is not None:
        period = ("Days", default.days) if default.days else ("Years", default.years)
        children.append(("Rule", [("DefaultRetention", [("Mode", default.mode), period])]))
    return xml_response(document("ObjectLockConfiguration", children))


async def put_object_lock_configuration(ctx: S3Context) -> Response:
    """Enable object lock on a bucket whose versioning is enabled, or change its default
    retention; a lock is never turned off."""
    require_digest_header(ctx.http.headers)
    bucket = ctx.require_bucket()
    default = parse_lock_configuration(await ctx.payload().read_all(MAX_LOCK_BYTES))
    params = bucket.params
    if params is None or (
        params.object_lock.value is None and params.versioning.value != VERSIONING_ENABLED
    ):
        raise S3Error(
            "InvalidBucketState",
            "Versioning must be 'Enabled' on the bucket to apply a Object Lock configuration",
            BucketName=ctx.bucket_name or "",
        )
    await ctx.services.access.set_object_lock(bucket.id, LockConfig(default))
    return Response(200)


async def get_object_retention(ctx: S3Context) -> Response:
    _require_lock(ctx)
    version = await load_version(ctx, ctx.require_key())
    retention = version.retention
    if retention.mode not in MODES:
        raise S3Error("NoSuchObjectLockConfiguration")
    children = [("Mode", retention.mode), ("RetainUntilDate", format_iso8601(retention.until_ms))]
    response = xml_response(document("Retention", children))
    response.headers.extend(version_headers(ctx, version))
    return response


async def put_object_retention(ctx: S3Context) -> Response:
    """Set a version's retention: a running COMPLIANCE one only extends, a running
    GOVERNANCE one shortens only with the bypass (AccessDenied otherwise)."""
    require_digest_header(ctx.http.headers)
    _require_lock(ctx)
    mode, until = parse_retention(await ctx.payload().read_all(MAX_LOCK_BYTES))
    new = Retention(mode, until_ms(until))
    bypass = bypasses_governance(ctx)

    def change(version: ObjectVersion, round_: Round) -> ObjectVersion:
        check_retention_change(version.retention, new, bypass, round_.clock_ms)
        stamp = max(round_.counter, version.retention.ts + 1)
        return replace(version, retention=replace(new, ts=stamp))

    return await _change_lock(ctx, change)


async def get_object_legal_hold(ctx: S3Context) -> Response:
    _require_lock(ctx)
    version = await load_version(ctx, ctx.require_key())
    if version.legal_hold.ts == 0:
        raise S3Error("NoSuchObjectLockConfiguration")
    status = "ON" if version.legal_hold.value else "OFF"
    response = xml_response(document("LegalHold", [("Status", status)]))
    response.headers.extend(version_headers(ctx, version))
    return response


async def put_object_legal_hold(ctx: S3Context) -> Response:
    require_digest_header(ctx.http.headers)
    _require_lock(ctx)
    on = parse_legal_hold(await ctx.payload().read_all(MAX_LOCK_BYTES))

    def change(version: ObjectVersion, round_: Round) -> ObjectVersion:
        return replace(version, legal_hold=version.legal_hold.update(on, round_.counter))

    return await _change_lock(ctx, change)


async def _change_lock(
    ctx: S3Context, change: Callable[[ObjectVersion, Round], ObjectVersion]
) -> Response:
    """Apply `change` to the version the request names, in a round."""
    key = ctx.require_key()
    named = await load_version(ctx, key)
    try:
        await ctx.services.objects.change_version(
            ctx.require_bucket().id, key, named.version_id, change
        )
    except LockRefused as refusal:
        raise S3Error("AccessDenied", str(refusal)) from None
    except LookupError:
        raise S3Error("NoSuchVersion", Key=key, VersionId=named.version_id) from None
    except ConditionalConflict as conflict:
        raise S3Error("ServiceUnavailable", str(conflict)) from None
    return Response(200, version_headers(ctx, named))
