"""Multipart uploads: create, upload part, complete, abort, list parts."""

from __future__ import annotations

import base64
import hashlib

from granary.api.http.types import Response
from granary.api.s3.bodies import MAX_COMPLETE_MULTIPART_BYTES, parse_complete_multipart
from granary.api.s3.bucket_ops import owner_node, xml_response
from granary.api.s3.conditions import format_iso8601
from granary.api.s3.context import S3Context
from granary.api.s3.errors import S3Error
from granary.api.s3.headers import metadata_from_request
from granary.api.s3.lock_headers import LOCK_HEADERS, version_settings
from granary.api.s3.names import validate_object_key
from granary.api.s3.numbers import integer_argument, part_number_argument
from granary.api.s3.put_ops import (
    check_write_conditions,
    checksum_response_headers,
    conditional_commit,
    receive_body,
)
from granary.api.s3.tags import tags_from_header
from granary.api.s3.versions import written_version_headers
from granary.api.s3.xml import document
from granary.model.mpu import MpuPart, MultipartUpload
from granary.model.object import ObjectMeta
from granary.util.checksums import (
    checksum_element_name,
    combined_checksum,
    composite_checksum,
    requested_checksum,
    supports_full_object,
)

MIN_PART_SIZE = 5 << 20
CHECKSUM_ALGORITHM_HEADER = "x-amz-checksum-algorithm"
CHECKSUM_TYPE_HEADER = "x-amz-checksum-type"
TAGGING_HEADER = "x-amz-tagging"
UPLOAD_ONLY_HEADERS = (
    CHECKSUM_ALGORITHM_HEADER,
    CHECKSUM_TYPE_HEADER,
    TAGGING_HEADER,
    *LOCK_HEADERS,
)
"""Kept with the upload for its completion, not with the object's metadata."""


def _checksum_type(algorithm: str, requested: str | None) -> str:
    """COMPOSITE (checksum of the parts' checksums) or FULL_OBJECT (CRCs combined)."""
    default = "FULL_OBJECT" if algorithm == "crc64nvme" else "COMPOSITE"
    checksum_type = (requested or default).upper()
    if checksum_type not in ("COMPOSITE", "FULL_OBJECT"):
        raise S3Error("InvalidRequest", f"Invalid checksum type {requested}.")
    if checksum_type == "FULL_OBJECT" and not supports_full_object(algorithm):
        raise S3Error("InvalidRequest", f"{algorithm.upper()} does not support FULL_OBJECT.")
    if checksum_type == "COMPOSITE" and algorithm == "crc64nvme":
        raise S3Error("InvalidRequest", "CRC64NVME only supports FULL_OBJECT.")
    return checksum_type


def _upload_header(upload: MultipartUpload, name: str) -> str | None:
    for header, value in upload.headers:
        if header == name:
            return value
    return None


def parse_part_number(ctx: S3Context) -> int:
    return part_number_argument(ctx.query.get("partNumber", ""))


async def load_upload(ctx: S3Context) -> MultipartUpload:
    """The upload named by ?uploadId=, checked against the request's bucket and key."""
    raw = ctx.query.get("uploadId", "")
    try:
        upload_id = bytes.fromhex(raw)
    except ValueError:
        upload_id = b""
    upload = await ctx.services.multipart.get(upload_id) if len(upload_id) == 16 else None
    if upload is None or upload.bucket_id != ctx.require_bucket().id or upload.key != ctx.key:
        raise S3Error("NoSuchUpload", UploadId=raw)
    return upload


def upload_checksum_algorithm(upload: MultipartUpload) -> str | None:
    """The checksum algorithm named at creation, which every part must use."""
    return _upload_header(upload, CHECKSUM_ALGORITHM_HEADER)


def _check_part_checksum(ctx: S3Context, upload: MultipartUpload) -> None:
    expected = upload_checksum_algorithm(upload)
    if expected is None:
        return
    requested = requested_checksum(ctx.http.headers.as_dict())
    actual = requested[0] if requested else None
    if actual != expected:
        raise S3Error(
            "InvalidRequest",
            f"Checksum Type mismatch occurred, expected checksum Type: {expected}, "
            f"actual checksum Type: {actual or 'null'}",
        )


async def create_multipart_upload(ctx: S3Context) -> Response:
    bucket = ctx.require_bucket()
    key = ctx.require_key()
    validate_object_key(key)
    headers = ctx.http.headers.as_dict()
    stored = metadata_from_request(headers)
    requested = requested_checksum(headers)
    response_headers = []
    if requested is not None:
        checksum_type = _checksum_type(requested[0], headers.get(CHECKSUM_TYPE_HEADER))
        stored.append((CHECKSUM_ALGORITHM_HEADER, requested[0]))
        stored.append((CHECKSUM_TYPE_HEADER, checksum_type))
        response_headers.append((CHECKSUM_ALGORITHM_HEADER, requested[0].upper()))
        response_headers.append((CHECKSUM_TYPE_HEADER, checksum_type))
    tagging = headers.get(TAGGING_HEADER)
    if tagging is not None and tags_from_header(tagging):  # checked now, applied at the end
        stored.append((TAGGING_HEADER, tagging))
    version_settings(ctx, ctx.header, None)  # the lock headers too
    stored += [(name, value) for name in LOCK_HEADERS if (value := headers.get(name)) is not None]
    upload = await ctx.services.multipart.create(bucket.id, key, stored)
    body = document(
        "InitiateMultipartUploadResult",
        [("Bucket", ctx.bucket_name), ("Key", key), ("UploadId", upload.upload_id.hex())],
    )
    response = xml_response(body)
    response.headers.extend(response_headers)
    return response


async def upload_part(ctx: S3Context) -> Response:
    part_number = parse_part_number(ctx)
    upload = await load_upload(ctx)
    _check_part_checksum(ctx, upload)
    multipart = ctx.services.multipart
    received, part = await receive_body(
        ctx,
        start_upload=lambda: multipart.begin_part(upload),
        part_number=part_number,
        max_size=ctx.services.settings.max_part_size,
        allow_inline=False,
    )
    checksum = received.checksum[1] if received.checksum else None
    await multipart.record_part(upload, part_number, part, received.etag, received.size, checksum)
    headers = [("etag", f'"{received.etag}"'), *checksum_response_headers(received.checksum)]
    return Response(200, headers)


def choose_parts(upload: MultipartUpload, requested: list) -> list[MpuPart]:
    """Check the client's part list against the uploaded parts, as S3 does.

    `requested` is in part order (parse_complete_multipart checks it), but a
    number may repeat: a client that re-sent a part lists each upload it was
    answered for, and the last entry of a number stands for it. Its ETag
    must be that of the part's winning upload, the one that finished last
    (see `Multipart.record_part`); ceph's s3-tests
    test_multipart_resend_first_finishes_last checks exactly that.
    """
    latest = upload.latest_parts()
    etags = {item.part_number: item.etag for item in requested}
    chosen: list[MpuPart] = []
    for number, etag in etags.items():
        part = latest.get(number)
        if part is None or part.etag != etag.strip('"'):
            raise S3Error("InvalidPart", PartNumber=str(number), ETag=etag)
        chosen.append(part)
    for part in chosen[:-1]:
        if part.size < MIN_PART_SIZE:
            raise S3Error(
                "EntityTooSmall",
                ProposedSize=str(part.size),
                MinSizeAllowed=str(MIN_PART_SIZE),
                PartNumber=str(part.part_number),
                ETag=part.etag,
            )
    return chosen


def _check_claimed_checksum(ctx: S3Context, checksum: tuple[str, str] | None) -> None:
    """A checksum the client gives for the whole upload must match the composite one."""
    claimed = requested_checksum(ctx.http.headers.as_dict())
    if claimed is None or claimed[1] is None:
        return
    algorithm, value = claimed
    if checksum is None or checksum[0] != algorithm:
        raise S3Error("InvalidRequest", f"The upload was not created with {algorithm.upper()}.")
    if value.split("-")[0] != checksum[1].split("-")[0]:
        raise S3Error("BadDigest", f"The {algorithm.upper()} you specified did not match.")


def _completed(ctx: S3Context, key: str, meta: ObjectMeta) -> Response:
    children = [
        ("Location", f"/{ctx.bucket_name}/{key}"),
        ("Bucket", ctx.bucket_name),
        ("Key", key),
        ("ETag", f'"{meta.etag}"'),
    ]
    if meta.checksum is not None:
        children.append((checksum_element_name(meta.checksum[0]), meta.checksum[1]))
        children.append(("ChecksumType", meta.checksum_type))
    return xml_response(document("CompleteMultipartUploadResult", children))


async def _already_completed(ctx: S3Context) -> Response | None:
    """A repeated Complete of an upload that became the object succeeds again, as in S3."""
    key = ctx.require_key()
    current = await ctx.services.objects.current(ctx.require_bucket().id, key)
    if current is not None and current.data_meta.upload_id.hex() == ctx.query.get("uploadId", ""):
        return _completed(ctx, key, current.data_meta)
    return None


async def complete_multipart_upload(ctx: S3Context) -> Response:
    try:
        upload = await load_upload(ctx)
    except S3Error as error:
        repeated = await _already_completed(ctx) if error.code == "NoSuchUpload" else None
        if repeated is None:
            raise
        return repeated
    body = await ctx.payload().read_all(MAX_COMPLETE_MULTIPART_BYTES)
    parts = choose_parts(upload, parse_complete_multipart(body))
    algorithm = upload_checksum_algorithm(upload)
    stored = [(n, v) for n, v in upload.headers if n not in UPLOAD_ONLY_HEADERS]
    md5s = b"".join(bytes.fromhex(p.etag) for p in parts)
    etag = f"{hashlib.md5(md5s).hexdigest()}-{len(parts)}"
    checksum = None
    checksum_type = _upload_header(upload, CHECKSUM_TYPE_HEADER) or "COMPOSITE"
    if algorithm is not None and all(p.checksum for p in parts):
        digests = [base64.b64decode(p.checksum) for p in parts]
        if checksum_type == "FULL_OBJECT":
            value = combined_checksum(
                algorithm, [(d, p.size) for d, p in zip(digests, parts, strict=True)]
            )
        else:
            value = composite_checksum(algorithm, digests)
        checksum = (algorithm, value)
    _check_claimed_checksum(ctx, checksum)
    key = ctx.require_key()
    condition = await check_write_conditions(ctx, upload.bucket_id, key)
    meta = ObjectMeta(
        sum(p.size for p in parts),
        etag,
        stored,
        checksum,
        parts=len(parts),
        part_checksums=[p.checksum for p in parts] if checksum is not None else [],
        checksum_type=checksum_type,
    )
    try:
        with conditional_commit(key):
            tags = tags_from_header(_upload_header(upload, TAGGING_HEADER))
            settings = version_settings(ctx, lambda name: _upload_header(upload, name), tags)
            version = await ctx.services.multipart.complete(
                upload, parts, meta, condition, settings
            )
    except LookupError:
        repeated = await _already_completed(ctx)
        if repeated is None:
            raise S3Error("NoSuchUpload", UploadId=upload.upload_id.hex()) from None
        return repeated
    response = _completed(ctx, key, meta)
    response.headers.extend(written_version_headers(version))
    return response


async def abort_multipart_upload(ctx: S3Context) -> Response:
    upload = await load_upload(ctx)
    await ctx.services.multipart.abort(upload)
    return Response(204)


async def list_parts(ctx: S3Context) -> Response:
    upload = await load_upload(ctx)
    marker_text = ctx.query.get("part-number-marker", "0") or "0"
    max_text = ctx.query.get("max-parts", "1000") or "1000"
    marker = integer_argument(marker_text, "part-number-marker")
    max_parts = min(integer_argument(max_text, "max-parts"), 1000)
    latest = sorted(upload.latest_parts().values(), key=lambda p: p.part_number)
    remaining = [p for p in latest if p.part_number > marker]
    shown = remaining[:max_parts]
    truncated = len(remaining) > len(shown)
    algorithm = upload_checksum_algorithm(upload)
    parts = [
        (
            "Part",
            [
                ("PartNumber", p.part_number),
                ("LastModified", format_iso8601(p.timestamp)),
                ("ETag", f'"{p.etag}"'),
                ("Size", p.size),
                (checksum_element_name(algorithm), p.checksum)
                if algorithm and p.checksum
                else None,
            ],
        )
        for p in shown
    ]
    children = [
        ("Bucket", ctx.bucket_name),
        ("Key", upload.key),
        ("UploadId", upload.upload_id.hex()),
        ("PartNumberMarker", marker),
        ("NextPartNumberMarker", shown[-1].part_number if shown else marker),
        ("MaxParts", max_parts),
        ("IsTruncated", truncated),
        ("Initiator", [("ID", ctx.key_id), ("DisplayName", ctx.key_id)]),
        owner_node(ctx),
        ("StorageClass", "STANDARD"),
        *parts,
    ]
    return xml_response(document("ListPartsResult", children))
