"""The object lock headers of a write (x-amz-object-lock-*): the lock of the version
it makes."""

from __future__ import annotations

from collections.abc import Callable

from granary.api.s3.conditions import format_iso8601
from granary.api.s3.context import S3Context
from granary.api.s3.errors import S3Error
from granary.model.lock import MODES, LockConfig, Retention, parse_retain_until
from granary.model.object import ObjectVersion, Tags, VersionSettings
from granary.util.time import now_ms

MODE_HEADER = "x-amz-object-lock-mode"
UNTIL_HEADER = "x-amz-object-lock-retain-until-date"
LEGAL_HOLD_HEADER = "x-amz-object-lock-legal-hold"
LOCK_HEADERS = (MODE_HEADER, UNTIL_HEADER, LEGAL_HOLD_HEADER)
BYPASS_HEADER = "x-amz-bypass-governance-retention"


def bucket_lock(ctx: S3Context) -> LockConfig | None:
    params = ctx.require_bucket().params
    return None if params is None else params.object_lock.value


def bypasses_governance(ctx: S3Context) -> bool:
    return (ctx.header(BYPASS_HEADER) or "").lower() == "true"


def until_ms(text: str) -> int:
    """A retain-until date given by a request, which must lie ahead."""
    try:
        until = parse_retain_until(text)
    except ValueError:
        raise S3Error(
            "InvalidArgument", "The retain until date must be provided in ISO 8601 format."
        ) from None
    if until <= now_ms():
        raise S3Error("InvalidArgument", "The retain until date must be in the future!")
    return until


def version_settings(
    ctx: S3Context, header: Callable[[str], str | None], tags: Tags | None
) -> VersionSettings | None:
    """What a write sets on its new version: `tags`, and the lock its headers ask
    for (read with `header`: the request's, or a multipart upload's kept ones)."""
    mode, until, hold = (header(name) for name in LOCK_HEADERS)
    if mode is None and until is None and hold is None:
        return VersionSettings(tags) if tags else None
    if bucket_lock(ctx) is None:
        raise S3Error("InvalidRequest", "Bucket is missing ObjectLockConfiguration")
    if (mode is None) != (until is None):
        raise S3Error(
            "InvalidArgument",
            "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied.",
        )
    retention = None
    if mode is not None and until is not None:
        if mode not in MODES:
            raise S3Error("InvalidArgument", "Unknown wormMode directive.")
        retention = Retention(mode, until_ms(until))
    if hold is not None and hold not in ("ON", "OFF"):
        raise S3Error("InvalidArgument", "Legal Hold must be either of 'ON' or 'OFF'.")
    return VersionSettings(tags or [], retention, hold == "ON")


def lock_response_headers(version: ObjectVersion) -> list[tuple[str, str]]:
    """What GET and HEAD say of a version's lock, when it has one."""
    headers = []
    if version.retention.mode in MODES:
        headers.append((MODE_HEADER, version.retention.mode))
        headers.append((UNTIL_HEADER, format_iso8601(version.retention.until_ms)))
    if version.legal_hold.ts:
        headers.append((LEGAL_HOLD_HEADER, "ON" if version.legal_hold.value else "OFF"))
    return headers
