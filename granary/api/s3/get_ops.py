"""GetObject and HeadObject: conditions, ranges, parts, streamed bodies."""

from __future__ import annotations

from granary.api.http.types import Response
from granary.api.s3.conditions import evaluate_preconditions, parse_range
from granary.api.s3.context import S3Context
from granary.api.s3.errors import S3Error
from granary.api.s3.headers import object_headers
from granary.api.s3.put_ops import checksum_response_headers
from granary.model.object import INLINE, ObjectVersion
from granary.model.version import VersionBlock


async def load_current(ctx: S3Context, key: str) -> ObjectVersion:
    version = await ctx.services.objects.current(ctx.require_bucket().id, key)
    if version is None:
        raise S3Error("NoSuchKey", Key=key)
    return version


async def version_blocks(ctx: S3Context, version: ObjectVersion) -> list[VersionBlock]:
    """The block list of a version; one-block objects need no version lookup."""
    meta = version.meta
    if meta.parts == 0 and meta.size <= ctx.services.settings.block_size:
        if meta.size == 0:
            return []
        return [VersionBlock(0, 0, version.first_block, meta.size)]
    row = await ctx.services.objects.version_of(version)
    if row is None or row.deleted:
        raise S3Error("NoSuchKey", Key=version.uuid.hex())
    return row.blocks


def _part_range(blocks: list[VersionBlock], part_number: int) -> tuple[int, int] | None:
    """Byte range [start, end] of one part within the object."""
    start = 0
    for block in blocks:
        if block.part_number == part_number:
            size = sum(b.size for b in blocks if b.part_number == part_number)
            return start, start + size - 1
        start += block.size
    return None


def _parse_part_number(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 10000:
        raise S3Error(
            "InvalidArgument",
            "Part number must be an integer between 1 and 10000.",
            ArgumentName="partNumber",
            ArgumentValue=value,
        )
    return int(value)


async def get_object(ctx: S3Context) -> Response:
    key = ctx.require_key()
    version = await load_current(ctx, key)
    meta = version.meta
    head = ctx.http.method == "HEAD"
    status = evaluate_preconditions(
        ctx.http.headers.as_dict(),
        etag=meta.etag,
        last_modified_ms=version.timestamp,
        method=ctx.http.method,
    )
    headers = object_headers(meta, version.timestamp, ctx.query)
    if status == 304:
        return Response(304, [h for h in headers if h[0] in ("etag", "last-modified")])
    if status == 412:
        raise S3Error("PreconditionFailed", Condition="If-Match")
    size = meta.size
    blocks: list[VersionBlock] | None = None
    byte_range: tuple[int, int] | None = None
    part_number = ctx.query.get("partNumber")
    if part_number is not None:
        if "range" in ctx.http.headers:
            raise S3Error("InvalidRequest", "Cannot specify both Range header and partNumber.")
        number = _parse_part_number(part_number)
        if meta.parts == 0:
            if number != 1:
                raise S3Error("InvalidPartNumber")
            byte_range = (0, size - 1) if size else None
        else:
            blocks = await version_blocks(ctx, version)
            byte_range = _part_range(blocks, number)
            if byte_range is None:
                raise S3Error("InvalidPartNumber")
            headers.append(("x-amz-mp-parts-count", str(meta.parts)))
    else:
        byte_range = parse_range(ctx.http.headers.get("range"), size)
    if byte_range is None:
        start, end, status = 0, size - 1, 200
        if (ctx.header("x-amz-checksum-mode") or "").upper() == "ENABLED":
            headers.extend(checksum_response_headers(meta.checksum))
    else:
        start, end = byte_range
        status = 206
        headers.append(("content-range", f"bytes {start}-{end}/{size}"))
    length = end - start + 1 if size else 0
    if head:
        return Response(status, headers, b"", content_length=length)
    if version.kind == INLINE:
        return Response(status, headers, version.inline[start : end + 1])
    if length == 0:
        return Response(status, headers, b"")
    if blocks is None:
        blocks = await version_blocks(ctx, version)
    body = ctx.services.objects.stream_blocks(blocks, start, end)
    return Response(status, headers, body, content_length=length)
