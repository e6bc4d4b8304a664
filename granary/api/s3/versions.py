"""Object versions at the API: the `versionId` argument, the version headers, and
which version a read names (the current one, or one by id)."""

from __future__ import annotations

import re

from granary.api.s3.context import S3Context
from granary.api.s3.errors import S3Error
from granary.model.object import ObjectVersion

_VERSION_ID = re.compile(r"null|[0-9a-f]{32}")


def version_id_argument(ctx: S3Context) -> str | None:
    """The request's `versionId`, checked (S3 answers InvalidArgument to one it never
    gives out); None without one."""
    value = ctx.query.get("versionId")
    if value is None:
        return None
    return checked_version_id(value)


def checked_version_id(value: str) -> str:
    if not _VERSION_ID.fullmatch(value):
        raise S3Error(
            "InvalidArgument",
            "Invalid version id specified",
            ArgumentName="versionId",
            ArgumentValue=value,
        )
    return value


def bucket_versioned(ctx: S3Context) -> bool:
    """Whether the bucket's versioning was ever set (then even null versions are named)."""
    params = ctx.require_bucket().params
    return params is not None and params.versioning.value != ""


def version_headers(ctx: S3Context, version: ObjectVersion) -> list[tuple[str, str]]:
    """`x-amz-version-id` of a version, where S3 sends it: in a bucket whose
    versioning was ever set."""
    if version.null and not bucket_versioned(ctx):
        return []
    return [("x-amz-version-id", version.version_id)]


def written_version_headers(version: ObjectVersion) -> list[tuple[str, str]]:
    """`x-amz-version-id` of a version a write made: S3 names only versioned ones (a
    write to a suspended bucket makes the null version and says nothing of it)."""
    return [] if version.null else [("x-amz-version-id", version.version_id)]


def marker_headers(ctx: S3Context, marker: ObjectVersion) -> dict[str, str]:
    """What S3 says of a delete marker that a read met; in a bucket that was never
    versioned there are no delete markers to speak of, and it says so."""
    named = version_headers(ctx, marker)
    if not named:
        return {"x-amz-delete-marker": "false"}
    return {"x-amz-delete-marker": "true", **dict(named)}


async def load_version(ctx: S3Context, key: str) -> ObjectVersion:
    """The version a read names: `versionId`'s, or the current one. Raises NoSuchKey
    (the object is deleted or never was), NoSuchVersion, or MethodNotAllowed (the
    version named is a delete marker), with S3's delete-marker headers."""
    version_id = version_id_argument(ctx)
    objects = ctx.services.objects
    bucket_id = ctx.require_bucket().id
    if version_id is None:
        row = await objects.get(bucket_id, key)
        newest = None if row is None else row.newest()
        if newest is None or not newest.is_data:
            headers = {} if newest is None else marker_headers(ctx, newest)
            raise S3Error("NoSuchKey", Key=key, headers=headers)
        return newest
    version = await objects.version(bucket_id, key, version_id)
    if version is None:
        raise S3Error("NoSuchVersion", Key=key, VersionId=version_id)
    if not version.is_data:
        raise S3Error(
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
            headers=marker_headers(ctx, version),
            Method=ctx.http.method,
            ResourceType="DeleteMarker",
        )
    return version
