"""DeleteObject and DeleteObjects."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import xml.etree.ElementTree as ET

from granary.api.http.types import Response
from granary.api.s3.bodies import (
    MAX_DELETE_OBJECTS_BYTES,
    delete_objects_parser,
    delete_request,
)
from granary.api.s3.bucket_ops import xml_response
from granary.api.s3.context import S3Context
from granary.api.s3.errors import S3Error
from granary.api.s3.names import validate_object_key
from granary.api.s3.payload import Payload
from granary.api.s3.put_ops import parse_content_md5, verify_digests
from granary.api.s3.xml import document
from granary.block.writer import StreamDigests
from granary.util.checksums import new_checksum, requested_checksum


async def delete_object(ctx: S3Context) -> Response:
    """Deleting a key that does not exist succeeds too, as in S3."""
    key = ctx.require_key()
    await ctx.services.objects.delete(ctx.require_bucket().id, key)
    return Response(204)


async def delete_objects(ctx: S3Context) -> Response:
    bucket = ctx.require_bucket()
    if "content-md5" not in ctx.http.headers and not any(
        name.startswith("x-amz-checksum-") or name == "x-amz-sdk-checksum-algorithm"
        for name, _ in ctx.http.headers.items()
    ):
        raise S3Error("InvalidRequest", "Missing required header for this request: Content-MD5")
    payload = ctx.payload()
    body, root = await _read_and_parse(ctx, payload)
    await _check_body_digest(ctx, payload, body)
    request = delete_request(root)
    results = []
    for item in request.objects:
        try:
            validate_object_key(item.key)
            if item.version_id not in (None, "null"):
                raise S3Error("NoSuchVersion", "The specified version does not exist.")
            await ctx.services.objects.delete(bucket.id, item.key)
        except S3Error as error:
            results.append(
                (
                    "Error",
                    [
                        ("Key", item.key),
                        ("VersionId", item.version_id),
                        ("Code", error.code),
                        ("Message", error.message),
                    ],
                )
            )
            continue
        if not request.quiet:
            results.append(("Deleted", [("Key", item.key), ("VersionId", item.version_id)]))
    return xml_response(document("DeleteResult", results))


async def _read_and_parse(ctx: S3Context, payload: Payload) -> tuple[bytes, ET.Element]:
    """The body, parsed as it arrives: one over its XML budget is refused (MalformedXML)
    as soon as the budget is passed, before the rest of it is read."""
    parser = delete_objects_parser()
    pieces = []
    async for piece in payload.chunks_within(MAX_DELETE_OBJECTS_BYTES):
        parser.feed(piece)
        pieces.append(piece)
    root = parser.close()
    body = b"".join(pieces)
    expected = payload.expected_sha256
    if expected is not None:
        digest = await asyncio.get_running_loop().run_in_executor(
            ctx.services.executor, hashlib.sha256, body
        )
        if not hmac.compare_digest(digest.hexdigest(), expected):
            raise S3Error("XAmzContentSHA256Mismatch")
    return body, root


async def _check_body_digest(ctx: S3Context, payload: Payload, body: bytes) -> None:
    """Content-MD5 or an x-amz-checksum header, over the XML body (up to 8 MiB:
    hashed on the thread pool, off the event loop)."""
    headers = ctx.http.headers
    requested = requested_checksum(headers.as_dict())
    digests = StreamDigests(checksum=new_checksum(requested[0]) if requested else None)
    await asyncio.get_running_loop().run_in_executor(ctx.services.executor, digests.update, body)
    verify_digests(
        payload, digests, parse_content_md5(headers.get("content-md5")), requested, len(body)
    )
