"""PostObject: a browser upload, a multipart/form-data form authenticated by its signed policy.

The fields come first and are read whole; then the signature, the policy and
the bucket permission are checked, and only then is the file part streamed,
through the same body-receiving path as PutObject (inline when small, blocks
otherwise, the MD5 as ETag).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from granary.api.http.body import Body, BodyError
from granary.api.http.types import Headers, Request, Response
from granary.api.s3.context import S3Services
from granary.api.s3.errors import S3Error
from granary.api.s3.form import (
    Event,
    Field,
    FileData,
    FileEnd,
    FileStart,
    FormError,
    FormParser,
    form_boundary,
)
from granary.api.s3.headers import STORED_STANDARD_HEADERS, metadata_from_request
from granary.api.s3.names import USER_METADATA_PREFIX, validate_object_key
from granary.api.s3.payload import READ_SIZE
from granary.api.s3.post_policy import (
    PostPolicy,
    check_form,
    check_length,
    decode_policy,
    form_signer,
)
from granary.api.s3.put_ops import checksum_response_headers, inline_allowed, receive_stream
from granary.api.s3.xml import document
from granary.model.buckets import Bucket
from granary.model.object import ObjectMeta

FORM_MEDIA_TYPE = "multipart/form-data"
FILENAME_VARIABLE = "${filename}"
CHECKSUM_FIELD_PREFIX = "x-amz-checksum-"
_CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0a-\x1f\x7f]")


def is_form_upload(method: str, key: str | None, headers: Headers) -> bool:
    """A POST of a form to a bucket, authenticated by the form rather than a header."""
    content_type = headers.get("content-type") or ""
    return (
        method == "POST"
        and key is None
        and "authorization" not in headers
        and content_type.split(";", 1)[0].strip().lower() == FORM_MEDIA_TYPE
    )


class _FormReader:
    """The request body as form events; after the fields, it reads like a body
    whose content is the file part's."""

    expected_length = None

    def __init__(self, body: Body, parser: FormParser) -> None:
        self._body = body
        self._parser = parser
        self._file_done = False
        self._pending = b""

    async def next_event(self) -> Event:
        while True:
            try:
                event = self._parser.next_event()
            except FormError as error:
                raise _form_error(error) from None
            if event is not None:
                return event
            try:
                data = await self._body.read(READ_SIZE)
            except BodyError as error:
                code = "RequestTimeout" if error.reason == "timeout" else "IncompleteBody"
                raise S3Error(code) from None
            if data:
                self._parser.feed(data)
            else:
                self._parser.end_of_input()

    async def read(self, max_bytes: int = READ_SIZE) -> bytes:
        """The next bytes of the file part, at most `max_bytes`; b"" at its end."""
        while not self._pending:
            if self._file_done:
                return b""
            event = await self.next_event()
            if isinstance(event, FileData):
                self._pending = event.data
            elif isinstance(event, FileEnd):
                self._file_done = True
        data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return data


class _FilePart:
    """The file part of a form as a body to store; its length is known only at its end."""

    length = None
    expected_sha256 = None

    def __init__(self, reader: _FormReader) -> None:
        self._reader = reader
        self.trailers: dict[str, str] = {}

    async def chunks(self) -> AsyncIterator[bytes]:
        while data := await self._reader.read():
            yield data


def _form_error(error: FormError) -> S3Error:
    if error.too_large:
        return S3Error(
            "MaxPostPreDataLengthExceededError",
            "Your POST request fields preceding the upload file were too large.",
        )
    return S3Error(
        "MalformedPOSTRequest",
        "The body of your POST request is not well-formed multipart/form-data.",
    )


async def _read_fields(reader: _FormReader) -> tuple[dict[str, str], str]:
    """The fields before the file (lower-case names) and the file's name."""
    fields: dict[str, str] = {}
    while True:
        event = await reader.next_event()
        if isinstance(event, FileStart):
            return fields, event.filename or ""
        if not isinstance(event, Field):
            raise S3Error(
                "InvalidArgument",
                "POST requires exactly one file upload per request.",
                ArgumentName="file",
                ArgumentValue="0",
            )
        name = event.name.lower()
        if name in fields:
            raise S3Error("InvalidArgument", f"The form field '{name}' appears more than once.")
        fields[name] = event.value


async def post_object(services: S3Services, request: Request, bucket_name: str) -> Response:
    boundary = form_boundary(request.headers.get("content-type"))
    if boundary is None:
        raise _form_error(FormError("no boundary"))
    reader = _FormReader(request.body, FormParser(boundary))
    fields, filename = await _read_fields(reader)
    policy, bucket = _authorise(services, fields, filename, bucket_name)
    key = fields["key"]
    validate_object_key(key)
    stored = metadata_from_request(_header_fields(fields))
    # The form's checksum fields stand for a PUT's checksum headers.
    checksum_fields = {n: v for n, v in fields.items() if n.startswith(CHECKSUM_FIELD_PREFIX)}
    objects = services.objects
    max_size = services.settings.max_part_size
    if policy.length_range is not None:
        max_size = min(max_size, policy.length_range[1])
    received, upload = await receive_stream(
        services,
        _FilePart(reader),
        checksum_fields,
        start_upload=lambda: objects.begin_upload(bucket.id, key),
        part_number=0,
        max_size=max_size,
        allow_inline=inline_allowed(objects, bucket.id),
    )
    meta = ObjectMeta(received.size, received.etag, stored, received.checksum)
    if upload is None:
        assert received.inline is not None  # no upload: the body was kept inline
        check_length(policy, received.size)
        await objects.put_inline(bucket.id, key, meta, received.inline)
    else:
        try:
            check_length(policy, received.size)
            await upload.complete(meta, received.first_block)
        except BaseException:
            await upload.abort()
            raise
    return _success_response(request, fields, bucket_name, key, received.etag, received.checksum)


def _authorise(
    services: S3Services, fields: dict[str, str], filename: str, bucket_name: str
) -> tuple[PostPolicy, Bucket]:
    """Check the form's signature, its policy and the signer's right to write.

    Replaces `${filename}` in the `key` field, which the policy sees expanded.
    """
    access = services.access
    signer = form_signer(fields, access.secret_of, services.settings.region)
    bucket = access.resolve_bucket(bucket_name)
    if signer is None:
        if bucket is None:
            raise S3Error("NoSuchBucket", BucketName=bucket_name)
        raise S3Error("AccessDenied", "Anonymous access is not allowed.")
    policy = decode_policy(fields["policy"])
    if "key" not in fields:
        raise S3Error(
            "InvalidArgument",
            "Bucket POST must contain a field named 'key'.  "
            "If it is specified, please check the order of the fields.",
            ArgumentName="key",
            ArgumentValue="",
        )
    fields["key"] = fields["key"].replace(FILENAME_VARIABLE, filename)
    check_form(policy, fields, bucket_name, datetime.now(UTC))
    if bucket is None:
        raise S3Error("NoSuchBucket", BucketName=bucket_name)
    access_key = access.get_key(signer)
    if access_key is None:
        raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=signer)
    if not bucket.permission(signer).write:
        raise S3Error("AccessDenied")
    return policy, bucket


def _header_fields(fields: dict[str, str]) -> dict[str, str]:
    """The fields a PUT would send as headers, as header values arrive: UTF-8
    bytes read as latin-1. A control character cannot be a header's."""
    headers = {}
    for name, value in fields.items():
        if not (
            name in STORED_STANDARD_HEADERS
            or name.startswith(USER_METADATA_PREFIX)
            or name == "x-amz-storage-class"
        ):
            continue
        if _CONTROL_CHARACTERS.search(value):
            raise S3Error("InvalidArgument", f"The form field '{name}' has a control character.")
        headers[name] = value.encode("utf-8", "surrogateescape").decode("latin-1")
    return headers


def _success_response(
    request: Request,
    fields: dict[str, str],
    bucket_name: str,
    key: str,
    md5_hex: str,
    checksum: tuple[str, str] | None,
) -> Response:
    etag = f'"{md5_hex}"'
    headers = [("etag", etag), *checksum_response_headers(checksum)]
    redirect = fields.get("success_action_redirect") or fields.get("redirect")
    target = redirect_target(redirect, bucket_name, key, etag) if redirect else None
    if target is not None:
        return Response(303, [("location", target), *headers])
    location = _object_url(request, key)
    headers.append(("location", location))
    status = fields.get("success_action_status")
    if status == "200":
        return Response(200, headers)
    if status == "201":
        body = document(
            "PostResponse",
            [("Location", location), ("Bucket", bucket_name), ("Key", key), ("ETag", etag)],
            xmlns=None,
        )
        return Response(201, [*headers, ("content-type", "application/xml")], body)
    return Response(204, headers)


def redirect_target(url: str, bucket_name: str, key: str, etag: str) -> str | None:
    """Where success_action_redirect sends the browser: the URL with the bucket,
    key and quoted ETag in its query; None unless it is an http(s) URL."""
    if not url.isascii() or not url.isprintable() or " " in url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    query = "&".join(
        f"{name}={quote(value, safe='')}"
        for name, value in (("bucket", bucket_name), ("key", key), ("etag", etag))
    )
    separator = "&" if parts.query else ("" if url.endswith("?") else "?")
    return url + separator + query


def _object_url(request: Request, key: str) -> str:
    """The new object's URL, addressed the way the request addressed its bucket."""
    host = request.headers.get("host")
    path = f"{request.path.rstrip('/')}/{quote(key, safe='/~')}"
    if host is None:
        return path
    scheme = "https" if request.headers.get("x-forwarded-proto") == "https" else "http"
    return f"{scheme}://{host}{path}"
