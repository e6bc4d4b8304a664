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
from granary.api.s3.headers import require_digest_header
from granary.api.s3.lock_headers import bypasses_governance
from granary.api.s3.names import validate_object_key
from granary.api.s3.payload import Payload
from granary.api.s3.put_ops import parse_content_md5, verify_digests
from granary.api.s3.versions import (
    bucket_versioned,
    checked_version_id,
    marker_headers,
    version_headers,
    version_id_argument,
)
from granary.api.s3.xml import Node, document
from granary.block.writer import StreamDigests
from granary.model.lock import LockRefused
from granary.model.objects import RowFull
from granary.table.table import ConditionalConflict
from granary.util.checksums import new_checksum, requested_checksum


async def delete_object(ctx: S3Context) -> Response:
    """Deleting a key (or a version) that does not exist succeeds too, as in S3."""
    key = ctx.require_key()
    said = await _delete(ctx, key, version_id_argument(ctx))
    return Response(204, list(said.items()))


async def _delete(ctx: S3Context, key: str, version_id: str | None) -> dict[str, str]:
    """Delete a version by id, or put a delete marker over the object: S3's headers
    saying what was deleted or written (x-amz-version-id, x-amz-delete-marker)."""
    objects = ctx.services.objects
    bucket_id = ctx.require_bucket().id
    if version_id is None:
        try:
            marker = await objects.delete(bucket_id, key)
        except RowFull as full:  # a versioned delete marker is a version too
            raise S3Error("InvalidRequest", str(full)) from None
        return marker_headers(ctx, marker) if bucket_versioned(ctx) else {}
    try:
        deleted = await objects.delete_version(
            bucket_id, key, version_id, bypass_governance=bypasses_governance(ctx)
        )
    except LockRefused as refusal:
        raise S3Error("AccessDenied", str(refusal)) from None
    except ConditionalConflict as conflict:
        raise S3Error("ServiceUnavailable", str(conflict)) from None
    if deleted is None or not bucket_versioned(ctx):
        return {"x-amz-version-id": version_id}
    if deleted.is_data:
        return dict(version_headers(ctx, deleted))
    return marker_headers(ctx, deleted)


async def delete_objects(ctx: S3Context) -> Response:
    require_digest_header(ctx.http.headers)
    payload = ctx.payload()
    body, root = await _read_and_parse(ctx, payload)
    await _check_body_digest(ctx, payload, body)
    request = delete_request(root)
    results: list[Node] = []
    for item in request.objects:
        try:
            validate_object_key(item.key)
            version_id = None if item.version_id is None else checked_version_id(item.version_id)
            said = await _delete(ctx, item.key, version_id)
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
            marker = said.get("x-amz-delete-marker") == "true"
            deleted: list[Node | None] = [
                ("Key", item.key),
                ("VersionId", item.version_id),
                ("DeleteMarker", True) if marker else None,
                ("DeleteMarkerVersionId", said.get("x-amz-version-id"))
                if marker and item.version_id is None
                else None,
            ]
            results.append(("Deleted", deleted))
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
