"""PutObject, and the body-receiving path it shares with UploadPart.

A small body is kept inline in the object row. A larger one is streamed
into blocks; its digests are checked once the last byte is in, and a
mismatch (or a client that goes away) aborts the upload so nothing of it
stays visible or referenced.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from granary.api.http.types import Response
from granary.api.s3.context import S3Context, S3Services
from granary.api.s3.errors import S3Error
from granary.api.s3.headers import metadata_from_request, require_digest_header
from granary.api.s3.lifecycle_ops import expiration_headers
from granary.api.s3.lock_headers import version_settings
from granary.api.s3.names import validate_object_key
from granary.api.s3.tags import tags_from_header
from granary.api.s3.versions import written_version_headers
from granary.block.writer import StreamDigests, StreamTooLarge, write_blocks
from granary.model.conditions import NO_SUCH_KEY, ConditionFailed, WriteCondition
from granary.model.object import ObjectMeta
from granary.model.objects import Objects, Upload
from granary.table.table import ConditionalConflict
from granary.util.checksums import checksum_header_name, new_checksum, requested_checksum


@dataclass
class Received:
    size: int
    md5: bytes
    checksum: tuple[str, str] | None
    inline: bytes | None
    first_block: bytes | None

    @property
    def etag(self) -> str:
        return self.md5.hex()


def parse_content_md5(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise S3Error("InvalidDigest") from None
    if len(digest) != 16:
        raise S3Error("InvalidDigest")
    return digest


class _Prefetched:
    """Chunks already read, followed by the rest of the stream."""

    def __init__(self, head: list[bytes], rest: AsyncIterator[bytes]) -> None:
        self._head = head
        self._rest = rest

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._head:
            yield chunk
        async for chunk in self._rest:
            yield chunk


class BodyStream(Protocol):
    """A body to store: a Payload, or the file part of a POST form."""

    @property
    def length(self) -> int | None: ...

    @property
    def expected_sha256(self) -> str | None: ...

    @property
    def trailers(self) -> Mapping[str, str]: ...

    def chunks(self) -> AsyncIterator[bytes]: ...


async def receive_body(
    ctx: S3Context,
    *,
    start_upload: Callable[[], Awaitable[Upload]],
    part_number: int,
    max_size: int,
    allow_inline: bool,
) -> tuple[Received, Upload | None]:
    """Read the request body into blocks (or inline) and verify its digests."""
    payload = ctx.payload()
    if payload.length is None and ctx.http.body.expected_length is None and not _chunked(ctx):
        raise S3Error("MissingContentLength")
    return await receive_stream(
        ctx.services,
        payload,
        ctx.http.headers.as_dict(),
        start_upload=start_upload,
        part_number=part_number,
        max_size=max_size,
        allow_inline=allow_inline,
    )


async def receive_stream(
    services: S3Services,
    body: BodyStream,
    headers: Mapping[str, str],
    *,
    start_upload: Callable[[], Awaitable[Upload]],
    part_number: int,
    max_size: int,
    allow_inline: bool,
) -> tuple[Received, Upload | None]:
    """Store a body (inline when small and allowed) and check it against `headers`'
    Content-MD5 and x-amz-checksum-* values."""
    settings = services.settings
    expected_md5 = parse_content_md5(headers.get("content-md5"))
    requested = requested_checksum(headers)
    if body.length is not None and body.length > max_size:
        raise S3Error("EntityTooLarge", MaxSizeAllowed=str(max_size))
    digests = StreamDigests(
        sha256=hashlib.sha256() if body.expected_sha256 else None,
        checksum=new_checksum(requested[0]) if requested else None,
    )
    chunks = body.chunks()
    head: list[bytes] = []
    head_size = 0
    exhausted = False
    if allow_inline:
        while head_size <= settings.inline_threshold:
            chunk = await anext(chunks, None)
            if chunk is None:
                exhausted = True
                break
            head.append(chunk)
            head_size += len(chunk)
    if exhausted:
        data = b"".join(head)
        if len(data) > max_size:
            raise S3Error("EntityTooLarge", MaxSizeAllowed=str(max_size))
        digests.update(data)
        received = verify_digests(body, digests, expected_md5, requested, len(data), inline=data)
        return received, None
    upload = await start_upload()
    try:
        result = await write_blocks(
            _Prefetched(head, chunks),
            block_size=settings.block_size,
            executor=services.executor,
            digests=digests,
            store=lambda offset, block_id, data: upload.store_block(
                part_number, offset, block_id, data
            ),
            max_size=max_size,
        )
        received = verify_digests(body, digests, expected_md5, requested, result.size)
        received.first_block = result.blocks[0].hash if result.blocks else None
    except StreamTooLarge:
        await upload.abort()
        raise S3Error("EntityTooLarge", MaxSizeAllowed=str(max_size)) from None
    except BaseException:
        await upload.abort()
        raise
    return received, upload


def _chunked(ctx: S3Context) -> bool:
    return "chunked" in (ctx.http.headers.get("transfer-encoding") or "").lower()


def verify_digests(
    payload: BodyStream,
    digests: StreamDigests,
    expected_md5: bytes | None,
    requested: tuple[str, str | None] | None,
    size: int,
    *,
    inline: bytes | None = None,
) -> Received:
    md5 = digests.md5.digest()
    if expected_md5 is not None and not hmac.compare_digest(md5, expected_md5):
        raise S3Error("BadDigest")
    expected_sha256 = payload.expected_sha256
    if digests.sha256 is not None and not hmac.compare_digest(
        digests.sha256.hexdigest(), expected_sha256
    ):
        raise S3Error("XAmzContentSHA256Mismatch")
    checksum = None
    if requested is not None and digests.checksum is not None:  # one comes with the other
        algorithm, claimed = requested
        if claimed is None:
            claimed = payload.trailers.get(checksum_header_name(algorithm))
        computed = digests.checksum.b64()
        if claimed is not None and claimed != computed:
            raise S3Error(
                "BadDigest",
                f"The {algorithm.upper()} you specified did not match the calculated checksum.",
            )
        checksum = (algorithm, computed)
    return Received(size, md5, checksum, inline, None)


def checksum_response_headers(
    checksum: tuple[str, str] | None, checksum_type: str = "FULL_OBJECT"
) -> list[tuple[str, str]]:
    if checksum is None:
        return []
    return [
        (checksum_header_name(checksum[0]), checksum[1]),
        ("x-amz-checksum-type", checksum_type),
    ]


EARLY_CHECK_BYTES = 1 << 20


def _etags(header: str) -> frozenset[str]:
    return frozenset(tag.strip().strip('"') for tag in header.split(","))


def write_condition(ctx: S3Context) -> WriteCondition | None:
    """The request's If-None-Match and If-Match, if it has either."""
    if_none_match = ctx.header("if-none-match")
    if_match = ctx.header("if-match")
    if if_none_match is None and if_match is None:
        return None
    return WriteCondition(
        None if if_none_match is None else _etags(if_none_match),
        None if if_match is None else _etags(if_match),
    )


def inline_allowed(objects: Objects, bucket_id: bytes) -> bool:
    """Whether a small body may be kept in the object row. Not in a versioned bucket:
    every version stays in the row, and a key written thousands of times would make
    a row of megabytes (past the RPC frame limit, 16 MiB, at ~3,800 versions of
    4 KiB); as blocks a version takes a few hundred bytes of its row."""
    return not objects.versioning_enabled(bucket_id)


def condition_error(failure: ConditionFailed, key: str) -> S3Error:
    if failure.condition == NO_SUCH_KEY:
        return S3Error("NoSuchKey", Key=key)
    return S3Error("PreconditionFailed", Condition=failure.condition)


async def check_write_conditions(
    ctx: S3Context, bucket_id: bytes, key: str, *, body_bytes: int | None = None
) -> WriteCondition | None:
    """S3 conditional writes: the request's condition, which the commit's round checks
    (`conditional_commit`). A write with a large body (over EARLY_CHECK_BYTES, or of
    unknown size) is refused early, before its body is received, if the condition
    fails on the current version as read now; a small one is not worth the read's
    round trip."""
    condition = write_condition(ctx)
    if condition is not None and (body_bytes is None or body_bytes > EARLY_CHECK_BYTES):
        failure = condition.failure(await ctx.services.objects.current(bucket_id, key))
        if failure is not None:
            raise condition_error(failure, key)
    return condition


@contextmanager
def conditional_commit(key: str) -> Iterator[None]:
    """Answers for a conditional commit: its condition failed (412, or 404 for If-Match
    on no object), or its round gave up: 409 ConditionalRequestConflict if the write
    was not sent, 503 if it may still be committed (as for any write of unknown fate)."""
    try:
        yield
    except ConditionFailed as failure:
        raise condition_error(failure, key) from None
    except ConditionalConflict as conflict:
        if conflict.maybe_applied:
            raise S3Error("ServiceUnavailable", str(conflict)) from None
        raise S3Error("ConditionalRequestConflict") from None


async def put_object(ctx: S3Context) -> Response:
    bucket = ctx.require_bucket()
    key = ctx.require_key()
    validate_object_key(key)
    condition = await check_write_conditions(
        ctx, bucket.id, key, body_bytes=ctx.http.body.expected_length
    )
    settings = version_settings(ctx, ctx.header, tags_from_header(ctx.header("x-amz-tagging")))
    if settings is not None and (settings.retention is not None or settings.legal_hold):
        require_digest_header(ctx.http.headers)
    headers = ctx.http.headers
    stored = metadata_from_request(headers.as_dict())
    objects = ctx.services.objects
    received, upload = await receive_body(
        ctx,
        start_upload=lambda: objects.begin_upload(bucket.id, key),
        part_number=0,
        max_size=ctx.services.settings.max_part_size,
        allow_inline=inline_allowed(objects, bucket.id),
    )
    meta = ObjectMeta(received.size, received.etag, stored, received.checksum)
    with conditional_commit(key):
        if upload is None:
            assert received.inline is not None  # no upload: the body was kept inline
            version = await objects.put_inline(
                bucket.id, key, meta, received.inline, condition, settings
            )
        else:
            try:
                version = await upload.complete(meta, received.first_block, condition, settings)
            except BaseException:
                await upload.abort()
                raise
    response_headers = [("etag", f'"{received.etag}"')]
    response_headers.extend(checksum_response_headers(received.checksum))
    response_headers.extend(written_version_headers(version))
    response_headers.extend(expiration_headers(ctx, key, version))
    return Response(200, response_headers)
