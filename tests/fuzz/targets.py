"""Fuzz targets for the S3 parsers: each takes arbitrary bytes and may only return
or raise the error its parser declares (S3Error, or FormError for the form parser).

Any other exception is a bug the fuzzer reports with the input that caused it.
Targets go through public functions only, so they keep working when a parser's
insides change. `SEEDS` gives each target a few well-formed inputs to start from.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime

from granary.api.s3 import bodies, conditions, sigv2, sigv4
from granary.api.s3.chunked import ChunkedDecoder, parse_declared_trailers
from granary.api.s3.errors import S3Error
from granary.api.s3.form import FormError, FormParser, form_boundary
from granary.api.s3.post_policy import check_form, check_length, decode_policy, form_signer
from granary.api.s3.router import decode_path, parse_query

KEY_ID = "GK0123456789abcdef01234567"
SECRET = "fuzz/secret+key=0123456789abcdefghijklmn"
REGION = "us-east-1"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
AMZ_NOW = NOW.strftime("%Y%m%dT%H%M%SZ")
HTTP_NOW = "Thu, 01 Jan 2026 12:00:00 GMT"


def _secret_of(key_id: str) -> str | None:
    return SECRET if key_id == KEY_ID else None


def _split(data: bytes, parts: int) -> list[bytes]:
    """`data` cut at its first `parts - 1` NUL bytes (missing parts are empty)."""
    pieces = data.split(b"\x00", parts - 1)
    return pieces + [b""] * (parts - len(pieces))


# --- requests: SigV4 and SigV2 ---------------------------------------------------------


def _request(data: bytes) -> tuple[str, str, str, dict[str, str]]:
    """A request head in HTTP form (`METHOD target` line, then header lines), as the
    S3 app hands it to the signature check: header names lower-case, values the
    UTF-8 text the client wrote (undecodable bytes as surrogate escapes), repeats joined."""
    lines = data.decode("latin-1").split("\n")
    method, _, target = lines[0].strip().partition(" ")
    path, _, query = target.partition("?")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            name = name.strip().lower()
            value = value.strip().encode("latin-1").decode("utf-8", "surrogateescape")
            headers[name] = f"{headers[name]},{value}" if name in headers else value
    return method, path, query, headers


def _parsed_request(
    data: bytes,
) -> tuple[str, str, str, list[tuple[str, str]], dict[str, str]] | None:
    """The request as the S3 app sees it before authenticating; None where the app stops."""
    method, path, query, headers = _request(data)
    try:
        pairs = parse_query(query)
    except UnicodeDecodeError:
        return None  # the app answers InvalidArgument
    decode_path(path or "/")
    return method, path or "/", query, pairs, headers


def fuzz_sigv4(data: bytes) -> None:
    try:
        parsed = _parsed_request(data)
        if parsed is None:
            return
        method, path, _, pairs, headers = parsed
        sigv4.authenticate(method, path, pairs, headers, _secret_of, NOW, REGION)
    except S3Error:
        pass


def fuzz_sigv2(data: bytes) -> None:
    try:
        parsed = _parsed_request(data)
        if parsed is None:
            return
        method, path, query, pairs, headers = parsed
        params = dict(reversed(pairs))
        if sigv2.is_sigv2(headers, params):
            sigv2.authenticate(
                method, path, query, params, headers, _secret_of, NOW, REGION, bucket_prefix=""
            )
        sigv2.canonical_subresources(query)
    except S3Error:
        pass


def _sigv4_seed(method: str, target: str, extra: str = "") -> bytes:
    headers = {
        "host": "127.0.0.1:3900",
        "x-amz-content-sha256": sigv4.UNSIGNED_PAYLOAD,
        "x-amz-date": AMZ_NOW,
    }
    path, _, query = target.partition("?")
    names = sorted(headers)
    canonical = sigv4.canonical_request(
        method,
        sigv4.canonical_uri(path),
        sigv4.canonical_query_string(parse_query(query)),
        headers,
        names,
        sigv4.UNSIGNED_PAYLOAD,
    )
    scope = f"{AMZ_NOW[:8]}/{REGION}/s3/aws4_request"
    key = sigv4.derive_signing_key(SECRET, AMZ_NOW[:8], REGION, "s3")
    signature = sigv4.sign(key, sigv4.string_to_sign(AMZ_NOW, scope, canonical))
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={KEY_ID}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    lines = [f"{method} {target}", *(f"{n}: {v}" for n, v in headers.items())]
    return "\n".join([*lines, f"authorization: {authorization}", extra]).encode()


def _sigv2_seed(method: str, target: str) -> bytes:
    path, _, query = target.partition("?")
    text = sigv2.string_to_sign(method, {}, HTTP_NOW, path + sigv2.canonical_subresources(query))
    signature = sigv2.sign(SECRET, text)
    return f"{method} {target}\ndate: {HTTP_NOW}\nauthorization: AWS {KEY_ID}:{signature}".encode()


# --- aws-chunked bodies ------------------------------------------------------------------

_CHUNK_AUTH = sigv4.AuthContext(
    access_key_id=KEY_ID,
    region=REGION,
    service="s3",
    date=AMZ_NOW[:8],
    timestamp=AMZ_NOW,
    scope=f"{AMZ_NOW[:8]}/{REGION}/s3/aws4_request",
    signing_key=sigv4.derive_signing_key(SECRET, AMZ_NOW[:8], REGION, "s3"),
    signature="0" * 64,
    content_sha256=sigv4.STREAMING_PAYLOAD,
    presigned=False,
)


def fuzz_chunked(data: bytes) -> None:
    """First byte: framing (signed or not, trailers or not) and where to cut the feed."""
    if not data:
        return
    mode, body = data[0], data[1:]
    signed, trailer = bool(mode & 1), bool(mode & 2)
    declared = parse_declared_trailers("x-amz-checksum-crc32" if mode & 4 else None)
    decoder = ChunkedDecoder(
        _CHUNK_AUTH if signed else None,
        signed=signed,
        trailer=trailer,
        declared_trailers=declared,
        max_chunk_size=4096,
    )
    cut = (mode >> 3) * len(body) // 32
    try:
        decoder.feed(body[:cut])
        decoder.feed(body[cut:])
        decoder.finish()
    except S3Error:
        pass


# --- XML bodies ------------------------------------------------------------------------


def fuzz_xml_bodies(data: bytes) -> None:
    for parse in (
        bodies.parse_complete_multipart,
        bodies.parse_delete_objects,
        bodies.parse_create_bucket,
    ):
        with contextlib.suppress(S3Error):
            parse(data)


# --- POST Object: the form and its policy --------------------------------------------------


def fuzz_post_policy(data: bytes) -> None:
    """A policy field (the first part as sent, then base64-encoded) checked against form fields."""
    raw_policy, raw_fields, signature = _split(data, 3)
    fields: dict[str, str] = {}
    for line in raw_fields.decode("utf-8", "surrogateescape").split("\n"):
        name, sep, value = line.partition("=")
        if sep:
            fields[name.lower()] = value
    encoded = raw_policy.decode("latin-1")
    fields["policy"] = encoded
    if signature:
        fields["awsaccesskeyid"] = KEY_ID
        fields["signature"] = signature.decode("latin-1")
    with contextlib.suppress(S3Error):
        form_signer(fields, _secret_of, REGION)
    for text in (encoded, base64.b64encode(raw_policy).decode()):
        try:
            policy = decode_policy(text)
            check_form(policy, fields, "bucket", NOW)
            check_length(policy, len(data))
        except S3Error:
            pass


def fuzz_form(data: bytes) -> None:
    """A multipart/form-data body, after the Content-Type that names its boundary."""
    content_type, body = _split(data, 2)
    boundary = form_boundary(content_type.decode("latin-1"))
    if boundary is None:
        return
    parser = FormParser(boundary, max_fields_bytes=4096)
    try:
        for piece in (body[: len(body) // 2], body[len(body) // 2 :], None):
            if piece is None:
                parser.end_of_input()
            else:
                parser.feed(piece)
            while parser.next_event() is not None:
                pass
    except FormError:
        pass


# --- range and conditional headers -------------------------------------------------------


def fuzz_conditions(data: bytes) -> None:
    """Range, x-amz-copy-source-range and the conditional headers, from NUL-separated values."""
    values = [part.decode("latin-1") for part in _split(data, 5)]
    size = int.from_bytes(hashlib.sha256(data).digest()[:2], "big")
    for object_size in (0, 1, size):
        with contextlib.suppress(S3Error):
            conditions.parse_range(values[0], object_size)
        with contextlib.suppress(S3Error):
            conditions.parse_copy_source_range(values[0], object_size)
    conditions.parse_http_date(values[1])
    headers = {
        name: value
        for name, value in zip(
            ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since"),
            values[1:],
            strict=True,
        )
        if value
    }
    for method in ("GET", "HEAD", "PUT"):
        conditions.evaluate_preconditions(
            headers, etag="abc", last_modified_ms=1_700_000_000_000, method=method
        )


def _policy_seed() -> bytes:
    policy = {
        "expiration": "2026-01-02T00:00:00Z",
        "conditions": [
            {"bucket": "bucket"},
            ["starts-with", "$key", "up/"],
            ["content-length-range", 1, 1024],
            ["eq", "$Content-Type", "text/plain"],
        ],
    }
    encoded = base64.b64encode(json.dumps(policy).encode())
    signature = base64.b64encode(hmac.new(SECRET.encode(), encoded, hashlib.sha1).digest())
    return encoded + b"\x00key=up/a\ncontent-type=text/plain\x00" + signature


def _form_seed() -> bytes:
    return (
        b"multipart/form-data; boundary=XyZ\x00"
        b'--XyZ\r\nContent-Disposition: form-data; name="key"\r\n\r\nup/a\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\nhello\r\n--XyZ--\r\n"
    )


TARGETS: dict[str, Callable[[bytes], None]] = {
    "sigv4": fuzz_sigv4,
    "sigv2": fuzz_sigv2,
    "chunked": fuzz_chunked,
    "xml_bodies": fuzz_xml_bodies,
    "post_policy": fuzz_post_policy,
    "form": fuzz_form,
    "conditions": fuzz_conditions,
}

SEEDS: dict[str, list[bytes]] = {
    "sigv4": [
        _sigv4_seed("GET", "/bucket/key?partNumber=1&response-content-type=text%2Fplain"),
        _sigv4_seed("PUT", "/bucket/a%20b", "content-type: text/plain"),
        b"GET /bucket/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
        + f"{KEY_ID}%2F{AMZ_NOW[:8]}%2F{REGION}%2Fs3%2Faws4_request".encode()
        + f"&X-Amz-Date={AMZ_NOW}&X-Amz-Expires=300&X-Amz-SignedHeaders=host".encode()
        + b"&X-Amz-Signature="
        + b"0" * 64
        + b"\nhost: 127.0.0.1",
    ],
    "sigv2": [
        _sigv2_seed("GET", "/bucket/key?versionId=1&uploads"),
        _sigv2_seed("PUT", "/bucket/a%2Bb"),
        f"GET /bucket/k?AWSAccessKeyId={KEY_ID}&Expires=1767268800&Signature=abc%3D".encode(),
    ],
    "chunked": [
        b"\x10" + b"5\r\nhello\r\n0\r\n\r\n",
        b"\x16" + b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n",
        b"\x11" + b"5;chunk-signature=" + b"0" * 64 + b"\r\nhello\r\n0;chunk-signature=0\r\n\r\n",
    ],
    "xml_bodies": [
        b'<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"a"</ETag>'
        b"</Part></CompleteMultipartUpload>",
        b"<Delete><Quiet>true</Quiet><Object><Key>a</Key><VersionId>v</VersionId></Object></Delete>",
        b"<CreateBucketConfiguration><LocationConstraint>us-east-1</LocationConstraint>"
        b"</CreateBucketConfiguration>",
    ],
    "post_policy": [_policy_seed()],
    "form": [_form_seed()],
    "conditions": [
        b'bytes=0-10\x00"abc"\x00W/"abc", "d"\x00Sun, 06 Nov 1994 08:49:37 GMT\x00'
        b"Sunday, 06-Nov-94 08:49:37 GMT",
        b"bytes=-5\x00*\x00\x00Sun Nov  6 08:49:37 1994\x00",
        b"bytes=1-" + b"9" * 5000,  # past int()'s 4,300-digit limit
    ],
}
