"""GetObject and HeadObject: conditions, ranges, parts, streamed bodies."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from granary.api.http.types import BodyCutOff, Response
from granary.api.s3.bucket_ops import xml_response
from granary.api.s3.conditions import evaluate_preconditions, format_http_date, parse_range
from granary.api.s3.context import S3Context
from granary.api.s3.errors import S3Error
from granary.api.s3.headers import object_headers, storage_class
from granary.api.s3.lifecycle_ops import expiration_headers
from granary.api.s3.lock_headers import lock_response_headers
from granary.api.s3.numbers import integer_argument, part_number_argument
from granary.api.s3.put_ops import checksum_response_headers
from granary.api.s3.versions import load_version, version_headers
from granary.api.s3.xml import document
from granary.block.manager import BlockUnavailable
from granary.model.object import INLINE, ObjectMeta, ObjectVersion
from granary.model.version import VersionBlock
from granary.util.checksums import checksum_element_name
from granary.util.file_region import FileRegion


async def version_blocks(ctx: S3Context, version: ObjectVersion) -> list[VersionBlock]:
    """The block list of a version; one-block objects need no version lookup."""
    meta = version.data_meta
    if meta.parts == 0 and meta.size <= ctx.services.settings.block_size:
        if meta.size == 0:
            return []
        if version.first_block is not None:
            return [VersionBlock(version.uuid, 0, 0, version.first_block, meta.size)]
    blocks = await ctx.services.objects.blocks_of(version.uuid)
    if sum(b.size for b in blocks) != meta.size:
        raise S3Error("InternalError", "The object's block list is incomplete.")
    return blocks


def _part_range(blocks: list[VersionBlock], part_number: int) -> tuple[int, int] | None:
    """Byte range [start, end] of one part within the object."""
    start = 0
    for block in blocks:
        if block.part_number == part_number:
            size = sum(b.size for b in blocks if b.part_number == part_number)
            return start, start + size - 1
        start += block.size
    return None


def _part_checksum_headers(
    meta: ObjectMeta, blocks: list[VersionBlock], part_number: int
) -> list[tuple[str, str]]:
    """The checksum of one part of a multipart object, when it has them."""
    if not meta.part_checksums or meta.checksum is None:
        return []
    numbers = sorted({b.part_number for b in blocks})
    index = numbers.index(part_number)
    if index >= len(meta.part_checksums):
        return []
    part_checksum = (meta.checksum[0], meta.part_checksums[index])
    return checksum_response_headers(part_checksum, meta.checksum_type)


async def get_object(ctx: S3Context) -> Response:
    key = ctx.require_key()
    version = await load_version(ctx, key)
    meta = version.data_meta
    head = ctx.http.method == "HEAD"
    status = evaluate_preconditions(
        ctx.http.headers.as_dict(),
        etag=meta.etag,
        last_modified_ms=version.timestamp,
        method=ctx.http.method,
    )
    headers = object_headers(meta, version.timestamp, ctx.query)
    headers.extend(version_headers(ctx, version))
    headers.extend(lock_response_headers(version))
    if "versionId" not in ctx.query:
        headers.extend(expiration_headers(ctx, key, version))
    if version.tags.value:
        headers.append(("x-amz-tagging-count", str(len(version.tags.value))))
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
        number = part_number_argument(part_number)
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
            headers.extend(_part_checksum_headers(meta, blocks, number))
    else:
        byte_range = parse_range(ctx.http.headers.get("range"), size)
    if byte_range is None:
        start, end, status = 0, size - 1, 200
        if (ctx.header("x-amz-checksum-mode") or "").upper() == "ENABLED":
            headers.extend(checksum_response_headers(meta.checksum, meta.checksum_type))
    else:
        start, end = byte_range
        status = 206
        headers.append(("content-range", f"bytes {start}-{end}/{size}"))
    length = end - start + 1 if size else 0
    if head:
        return Response(status, headers, b"", content_length=length)
    if version.kind == INLINE:
        assert version.inline is not None  # an inline version carries its data
        return Response(status, headers, version.inline[start : end + 1])
    if length == 0:
        return Response(status, headers, b"")
    if blocks is None:
        blocks = await version_blocks(ctx, version)
    body = ctx.services.objects.stream_for_sending(blocks, start, end)
    # The first block is read before answering: out of reach, it gets a 503.
    first = await anext(body)
    return Response(status, headers, _cut_off_if_unavailable(first, body), content_length=length)


async def _cut_off_if_unavailable(
    first: bytes | FileRegion, rest: AsyncGenerator[bytes | FileRegion, None]
) -> AsyncIterator[bytes | FileRegion]:
    """`first`, then `rest`; a later block out of reach cuts the body off."""
    try:
        yield first
        del first  # nor any block once sent: a stalled reader would hold it
        async for chunk in rest:
            yield chunk
            del chunk
    except BlockUnavailable as error:
        raise BodyCutOff(str(error)) from None
    finally:
        await rest.aclose()


async def get_object_torrent(ctx: S3Context) -> Response:
    """GetObjectTorrent: Granary seeds no torrents, so every object is one without a torrent.

    S3 answers NoSuchKey for a missing object; the same code tells a client
    that has an object that no torrent of it can be had.
    """
    key = ctx.require_key()
    await load_version(ctx, key)
    raise S3Error("NoSuchKey", "No torrent is available for this object.", Key=key)


OBJECT_ATTRIBUTES = frozenset({"ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"})


def _attribute_parts(ctx: S3Context, meta: ObjectMeta, blocks: list[VersionBlock]) -> list:
    marker = integer_argument(
        ctx.header("x-amz-part-number-marker") or "0",
        "x-amz-part-number-marker",
        message="Part number marker and max parts must be integers.",
    )
    max_parts = min(
        integer_argument(
            ctx.header("x-amz-max-parts") or "1000",
            "x-amz-max-parts",
            message="Part number marker and max parts must be integers.",
        ),
        1000,
    )
    sizes: dict[int, int] = {}
    for block in blocks:
        sizes[block.part_number] = sizes.get(block.part_number, 0) + block.size
    numbers = sorted(sizes)
    remaining = [n for n in numbers if n > marker]
    shown = remaining[:max_parts]
    element = None
    if meta.part_checksums and meta.checksum is not None:
        element = checksum_element_name(meta.checksum[0])
    parts = [
        (
            "Part",
            [
                ("PartNumber", number),
                ("Size", sizes[number]),
                (element, meta.part_checksums[numbers.index(number)]) if element else None,
            ],
        )
        for number in shown
    ]
    return [
        ("PartsCount", meta.parts),
        ("PartNumberMarker", marker),
        ("NextPartNumberMarker", shown[-1] if shown else marker),
        ("MaxParts", max_parts),
        ("IsTruncated", len(remaining) > len(shown)),
        *parts,
    ]


async def get_object_attributes(ctx: S3Context) -> Response:
    """GetObjectAttributes: the requested parts of an object's metadata, as XML."""
    key = ctx.require_key()
    wanted = {a.strip() for a in (ctx.header("x-amz-object-attributes") or "").split(",")}
    wanted.discard("")
    if not wanted or not wanted <= OBJECT_ATTRIBUTES:
        raise S3Error(
            "InvalidArgument",
            "Invalid attribute name specified.",
            ArgumentName="x-amz-object-attributes",
        )
    version = await load_version(ctx, key)
    meta = version.data_meta
    children: list = [("ETag", meta.etag) if "ETag" in wanted else None]
    if "Checksum" in wanted and meta.checksum is not None:
        children.append(
            (
                "Checksum",
                [
                    (checksum_element_name(meta.checksum[0]), meta.checksum[1]),
                    ("ChecksumType", meta.checksum_type),
                ],
            )
        )
    if "ObjectParts" in wanted and meta.parts:
        children.append(
            ("ObjectParts", _attribute_parts(ctx, meta, await version_blocks(ctx, version)))
        )
    if "StorageClass" in wanted:
        children.append(("StorageClass", storage_class(meta)))
    if "ObjectSize" in wanted:
        children.append(("ObjectSize", meta.size))
    response = xml_response(document("GetObjectAttributesResponse", children))
    response.headers.append(("last-modified", format_http_date(version.timestamp)))
    response.headers.extend(version_headers(ctx, version))
    return response
