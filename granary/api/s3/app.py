"""The S3 endpoint: authenticate, route, authorise, dispatch, render errors."""

from __future__ import annotations

import errno
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from granary.api.http.types import Request, Response
from granary.api.s3 import (
    acl_ops,
    bucket_ops,
    copy_ops,
    delete_ops,
    get_ops,
    lifecycle_ops,
    list_ops,
    lock_ops,
    metrics,
    mpu_ops,
    post_ops,
    put_ops,
    sigv2,
    tagging_ops,
)
from granary.api.s3.conditions import format_http_date
from granary.api.s3.context import S3Context, S3Services
from granary.api.s3.errors import S3Error
from granary.api.s3.numbers import parse_decimal
from granary.api.s3.router import decode_path, parse_query, route, split_bucket_key
from granary.api.s3.sigv4 import AuthContext, authenticate
from granary.api.s3.xml import error_document
from granary.block.manager import BlockUnavailable
from granary.model.access import Access, BucketGone
from granary.model.buckets import AccessKey
from granary.model.objects import RowFull
from granary.table.quorum import QuorumError
from granary.telemetry import logs, tracing
from granary.util.checksums import ChecksumRequestError
from granary.util.time import now_ms

log = logging.getLogger("granary.s3")
access_log = logging.getLogger("granary.s3.access")

OperationHandler = Callable[[S3Context], Awaitable[Response]]

# operation -> (handler, permission needed on the bucket; None: checked by the handler)
OPERATIONS: dict[str, tuple[OperationHandler, str | None]] = {
    "ListBuckets": (bucket_ops.list_buckets, None),
    "CreateBucket": (bucket_ops.create_bucket, None),
    "HeadBucket": (bucket_ops.head_bucket, "read"),
    "DeleteBucket": (bucket_ops.delete_bucket, "owner"),
    "GetBucketLocation": (bucket_ops.get_bucket_location, "read"),
    "GetBucketVersioning": (bucket_ops.get_bucket_versioning, "read"),
    "PutBucketVersioning": (bucket_ops.put_bucket_versioning, "owner"),
    "GetBucketAcl": (acl_ops.get_bucket_acl, "read"),
    "PutBucketAcl": (acl_ops.put_bucket_acl, "owner"),
    "GetObjectAcl": (acl_ops.get_object_acl, "read"),
    "PutObjectAcl": (acl_ops.put_object_acl, "write"),
    "GetBucketTagging": (bucket_ops.get_bucket_tagging, "read"),
    "PutBucketTagging": (bucket_ops.put_bucket_tagging, "owner"),
    "DeleteBucketTagging": (bucket_ops.delete_bucket_tagging, "owner"),
    "GetBucketLifecycleConfiguration": (lifecycle_ops.get_bucket_lifecycle, "read"),
    "PutBucketLifecycleConfiguration": (lifecycle_ops.put_bucket_lifecycle, "owner"),
    "DeleteBucketLifecycle": (lifecycle_ops.delete_bucket_lifecycle, "owner"),
    "GetObjectLockConfiguration": (lock_ops.get_object_lock_configuration, "read"),
    "PutObjectLockConfiguration": (lock_ops.put_object_lock_configuration, "owner"),
    "GetObjectRetention": (lock_ops.get_object_retention, "read"),
    "PutObjectRetention": (lock_ops.put_object_retention, "write"),
    "GetObjectLegalHold": (lock_ops.get_object_legal_hold, "read"),
    "PutObjectLegalHold": (lock_ops.put_object_legal_hold, "write"),
    "ListObjects": (list_ops.list_objects_v1, "read"),
    "ListObjectsV2": (list_ops.list_objects_v2, "read"),
    "ListObjectVersions": (list_ops.list_object_versions, "read"),
    "ListMultipartUploads": (list_ops.list_multipart_uploads, "read"),
    "DeleteObjects": (delete_ops.delete_objects, "write"),
    "GetObject": (get_ops.get_object, "read"),
    "HeadObject": (get_ops.get_object, "read"),
    "GetObjectAttributes": (get_ops.get_object_attributes, "read"),
    "GetObjectTorrent": (get_ops.get_object_torrent, "read"),
    "PutObject": (put_ops.put_object, "write"),
    "GetObjectTagging": (tagging_ops.get_object_tagging, "read"),
    "PutObjectTagging": (tagging_ops.put_object_tagging, "write"),
    "DeleteObjectTagging": (tagging_ops.delete_object_tagging, "write"),
    "DeleteObject": (delete_ops.delete_object, "write"),
    "CreateMultipartUpload": (mpu_ops.create_multipart_upload, "write"),
    "UploadPart": (mpu_ops.upload_part, "write"),
    "CompleteMultipartUpload": (mpu_ops.complete_multipart_upload, "write"),
    "AbortMultipartUpload": (mpu_ops.abort_multipart_upload, "write"),
    "ListParts": (mpu_ops.list_parts, "read"),
}
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
COPY_HANDLERS = {"PutObject": copy_ops.copy_object, "UploadPart": copy_ops.upload_part_copy}
COPY_ENDPOINTS = {"PutObject": "CopyObject", "UploadPart": "UploadPartCopy"}


class Endpoint:
    """The name of a request's operation (Garage's `api_endpoint` label): set once
    routed; a request that failed earlier is named from its parsed path when it is
    counted. Requests whose operation cannot be told are not counted, as in Garage."""

    __slots__ = ("name", "parsed")

    def __init__(self) -> None:
        self.name: str | None = None
        self.parsed: tuple[str | None, str | None, dict[str, str]] | None = None

    def resolve(self, request: Request) -> str | None:
        if self.name is None and self.parsed is not None:
            self.name = _endpoint_name(request, *self.parsed)
        return self.name


class S3App:
    def __init__(self, services: S3Services) -> None:
        self.services = services

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        endpoint = Endpoint()
        trace_id = tracing.new_trace_id()
        request_id = trace_id.hex()  # the request's id is its trace's
        logs.request_id.set(request_id)  # on every log line written for this request
        with tracing.root(trace_id, request.method) as span:
            try:
                response = await self._answer(request, request_id, endpoint)
            except Exception:
                name = endpoint.resolve(request)
                if name is not None:  # answered InternalError by the HTTP layer
                    metrics.record(name, 500, time.perf_counter() - started, 0, 0)
                raise
            seconds = time.perf_counter() - started
            name = endpoint.resolve(request)
            request_bytes = _announced_request_body(request)
            response_bytes = _announced_body(response)
            if name is not None:
                metrics.record(name, response.status, seconds, request_bytes, response_bytes)
            if span.recording:
                _describe(span, name, endpoint, response, request_bytes, response_bytes)
        # The access log: GRANARY_LOG=granary.s3.access=debug shows it.
        access_log.debug(
            "%s %s %s %d %.1fms",
            name or "-",
            request.method,
            request.path,
            response.status,
            seconds * 1000,
        )
        return response

    async def _answer(self, request: Request, request_id: str, endpoint: Endpoint) -> Response:
        try:
            response = await self._dispatch(request, request_id, endpoint)
        except S3Error as error:
            response = self.error_response(request, error, request_id)
        except BucketGone:
            # Deleted while the object was written into it; the write was undone.
            gone = S3Error("NoSuchBucket", BucketName=self._bucket_name(request))
            response = self.error_response(request, gone, request_id)
        except (QuorumError, BlockUnavailable, OSError) as error:
            if isinstance(error, OSError) and error.errno not in NO_SPACE:
                raise
            log.warning("%s %s: %s", request.method, request.path, error)
            response = self.error_response(request, self._unavailable(request), request_id)
        except (ChecksumRequestError, RowFull) as error:
            response = self.error_response(
                request, S3Error("InvalidRequest", str(error)), request_id
            )
        response.headers.extend(_common_headers(request_id))
        return response

    def _unavailable(self, request: Request) -> S3Error:
        """Why a request could not be done: for a write, this node's full disk if it
        is full; else too few nodes (a read is never refused for a full disk)."""
        full = None if request.method in ("GET", "HEAD") else self.services.full_disk()
        if full is not None:
            return S3Error(
                "InsufficientStorage",
                f"This node's {full} is full; free some space or add capacity.",
                status=507,
            )
        return S3Error("ServiceUnavailable", "Too few nodes answered; retry later.", status=503)

    def _bucket_name(self, request: Request) -> str:
        name, _ = split_bucket_key(
            decode_path(request.path),
            request.headers.get("host"),
            self.services.settings.root_domain,
        )
        return name or ""

    async def _dispatch(self, request: Request, request_id: str, endpoint: Endpoint) -> Response:
        settings = self.services.settings
        try:
            query_pairs = parse_query(request.query_string)
        except UnicodeDecodeError:
            raise S3Error("InvalidArgument", "The query string is not valid UTF-8.") from None
        headers = request.headers
        path = decode_path(request.path)
        bucket_name, key = split_bucket_key(path, headers.get("host"), settings.root_domain)
        query = dict(query_pairs)
        endpoint.parsed = (bucket_name, key, query)
        if request.method == "OPTIONS":
            raise S3Error(
                "BadRequest", "Insufficient information. Origin request header needed.", status=400
            )
        if bucket_name is not None and post_ops.is_form_upload(request.method, key, headers):
            # Authenticated by the form's signed policy, not by a header.
            endpoint.name = "PostObject"
            return await post_ops.post_object(self.services, request, bucket_name)
        signed_headers = _utf8_values(headers.as_dict())
        access = self.services.access
        params = dict(reversed(query_pairs))  # the first value of each parameter
        use_sigv2 = sigv2.is_sigv2(signed_headers, params)
        virtual_host = (bucket_name, key) != split_bucket_key(path, None, None)

        keys_read: dict[str, AccessKey] = {}

        def secret_of(key_id: str) -> str | None:
            # Key ids are ASCII: one that is not (invalid UTF-8 included) is unknown.
            found = access.key_and_secret(key_id) if key_id.isascii() else None
            if found is None:
                return None
            keys_read[key_id] = found[0]
            return found[1]

        def check_signature() -> AuthContext | None:
            if use_sigv2:
                return sigv2.authenticate(
                    request.method,
                    request.path,
                    request.query_string,
                    params,
                    signed_headers,
                    secret_of,
                    datetime.now(UTC),
                    settings.region,
                    bucket_prefix=f"/{bucket_name}" if virtual_host else "",
                )
            return authenticate(
                request.method,
                request.path,
                query_pairs,
                signed_headers,
                secret_of,
                datetime.now(UTC),
                settings.region,
            )

        try:
            auth = await _verify_with_fresh_key(check_signature, access)
        except S3Error as error:
            # The request text it echoes (key id, signature, string to sign) may hold
            # bytes that are not UTF-8: U+FFFD stands for them, so the XML stays well-formed.
            error.extra = {name: _readable(value) for name, value in error.extra.items()}
            raise
        if auth is None:
            if bucket_name is not None and self.services.access.resolve_bucket(bucket_name) is None:
                raise S3Error("NoSuchBucket", BucketName=bucket_name)
            raise S3Error("AccessDenied", "Anonymous access is not allowed.")
        access_key = keys_read.get(auth.access_key_id)
        if access_key is None:
            raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=auth.access_key_id)
        routed = route(request.method, bucket_name, key, query)
        handler, permission = OPERATIONS[routed.operation]
        endpoint.name = routed.operation
        if routed.operation in COPY_HANDLERS and "x-amz-copy-source" in headers:
            handler = COPY_HANDLERS[routed.operation]
            endpoint.name = COPY_ENDPOINTS[routed.operation]
        context = S3Context(
            services=self.services,
            http=request,
            operation=routed.operation,
            bucket_name=routed.bucket,
            key=routed.key,
            query=query,
            auth=auth,
            access_key=access_key,
            request_id=request_id,
        )
        if routed.bucket is not None and routed.operation != "CreateBucket":
            context.bucket = await access.bucket_for_request(routed.bucket)
            if context.bucket is None:
                raise S3Error("NoSuchBucket", BucketName=routed.bucket)
            if permission and not context.bucket.permission(access_key.key_id).allows(permission):
                raise S3Error("AccessDenied")
        return await handler(context)

    def error_response(self, request: Request, error: S3Error, request_id: str) -> Response:
        body = error_document(
            error.code,
            error.message,
            resource=request.path,
            request_id=request_id,
            host_id=request_id,
            extra=error.extra,
        )
        headers = [("content-type", "application/xml"), *error.headers.items()]
        if request.method == "HEAD":
            return Response(error.status, headers, b"", content_length=len(body))
        return Response(error.status, headers, body)

    def unexpected_error(self, request: Request, exc: BaseException) -> Response:
        """A bug or an unavailable dependency: logged here, InternalError to the client
        (under the request id `handle` gave the request and its log lines)."""
        request_id = logs.request_id.get() or secrets.token_hex(8).upper()
        log.error("%s %s failed", request.method, request.path, exc_info=exc)
        response = self.error_response(request, S3Error("InternalError"), request_id)
        response.headers.extend(_common_headers(request_id))
        return response

    def protocol_error(self, status: int, code: str, message: str) -> Response:
        """An error found by the HTTP layer before a request could be parsed."""
        request_id = secrets.token_hex(8).upper()
        body = error_document(
            code, message, resource="", request_id=request_id, host_id=request_id, extra={}
        )
        return Response(
            status, [("content-type", "application/xml"), *_common_headers(request_id)], body
        )


async def _verify_with_fresh_key(
    check_signature: Callable[[], AuthContext | None], access: Access
) -> AuthContext | None:
    """Check a signature; for an unknown key, once more after fetching the key."""
    try:
        return check_signature()
    except S3Error as error:
        # A key created on another node moments ago may not be here yet.
        key_id = error.extra.get("AWSAccessKeyId")
        if error.code != "InvalidAccessKeyId" or not key_id or not key_id.isascii():
            raise
        if await access.refresh_key(key_id) is None:
            raise
        return check_signature()


def _readable(text: str) -> str:
    """Text from the request with its undecodable bytes (surrogate escapes) as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _utf8_values(headers: dict[str, str]) -> dict[str, str]:
    """Header values as the client wrote them: UTF-8, which the signature covers.

    The HTTP layer decodes header bytes as latin-1 so they round-trip; a
    client signs the text it meant, whose UTF-8 encoding is those bytes.
    """
    return {
        name: value.encode("latin-1").decode("utf-8", "surrogateescape")
        if not value.isascii()
        else value
        for name, value in headers.items()
    }


def _describe(
    span: tracing.AnySpan,
    name: str | None,
    endpoint: Endpoint,
    response: Response,
    request_bytes: int,
    response_bytes: int,
) -> None:
    """An S3 request's span: its operation, bucket and key, status and bytes."""
    if name is not None and isinstance(span, tracing.Span):
        span.name = name  # else it keeps the request method's
    span.set("http.response.status_code", response.status)
    if endpoint.parsed is not None:
        bucket, key, _ = endpoint.parsed
        if bucket is not None:
            span.set("aws.s3.bucket", bucket)
        if key is not None:
            span.set("aws.s3.key", key)
    if request_bytes:
        span.set("granary.request_bytes", request_bytes)
    if response_bytes:
        span.set("granary.response_bytes", response_bytes)
    if response.status >= 500:
        span.fail(f"HTTP {response.status}")


def _common_headers(request_id: str) -> list[tuple[str, str]]:
    return [
        ("x-amz-request-id", request_id),
        ("x-amz-id-2", request_id),
        ("date", format_http_date(now_ms())),
        ("server", "Granary"),
    ]


def _endpoint_name(
    request: Request, bucket: str | None, key: str | None, query: dict[str, str]
) -> str | None:
    """The operation a request asks for, as Garage names it; None if it names none."""
    if request.method == "OPTIONS":
        return "Options"
    try:
        operation = route(request.method, bucket, key, query).operation
    except S3Error:
        return None
    if operation in COPY_ENDPOINTS and "x-amz-copy-source" in request.headers:
        return COPY_ENDPOINTS[operation]
    return operation


def _announced_request_body(request: Request) -> int:
    """The payload size a request announced (its decoded size when aws-chunked); 0
    when it announced none, or a value that is no size (a hostile one included)."""
    headers = request.headers
    announced = headers.get("x-amz-decoded-content-length") or headers.get("content-length")
    return (parse_decimal(announced) or 0) if announced is not None else 0


def _announced_body(response: Response) -> int:
    if isinstance(response.body, bytes):
        return len(response.body)
    return response.content_length or 0
