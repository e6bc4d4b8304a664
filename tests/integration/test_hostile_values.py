"""Hostile values in the numbers and header overrides a request carries, against a real server.

Superscript digits (which `str.isdigit` accepts and `int` refuses), digits of
other scripts, 5,000-digit numbers (past `int`'s 4,300-digit limit) and
response-* overrides no header line can carry: each is answered with the S3
error XML (400), never a 500, and the server keeps serving.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import quote

import pytest
from test_hostile import assert_s3_error, exchange, signed_request

HUGE = "9" * 5000


@pytest.fixture
def stored(s3, bucket) -> str:
    s3.put_object(Bucket=bucket, Key="k", Body=b"0123456789")
    return bucket


def signed_get(server, target: str, headers: dict[str, str] | None = None) -> bytes:
    return signed_request(server, "GET", target, headers=headers)


@pytest.mark.parametrize(
    "value",
    ["text/plain\r\nSet-Cookie: a=1", "text\nplain", "text\x00", "\u65e5\u672c", "a\x85b"],
    ids=["crlf", "lf", "nul", "cjk", "c1-control"],
)
@pytest.mark.parametrize("parameter", ["response-content-type", "response-content-disposition"])
def test_response_override_no_header_can_carry(server, stored, parameter, value):
    target = f"/{stored}/k?{parameter}={quote(value, safe='')}"
    reply = exchange(server.s3_port, signed_get(server, target))
    assert_s3_error(reply, 400, "InvalidArgument")
    assert "set-cookie" not in reply.headers


def test_response_override_latin1_is_applied(server, stored):
    reply = exchange(
        server.s3_port, signed_get(server, f"/{stored}/k?response-content-language=fr%C3%A9")
    )
    assert reply is not None and reply.status == 200
    assert reply.headers["content-language"] == "fr\u00e9"


@pytest.mark.parametrize(
    "value", ["%C2%B2", "%D9%A3", "%EF%BC%91", HUGE, "0", "10001"], ids=lambda v: v[:12]
)
def test_get_part_number(server, stored, value):
    reply = exchange(server.s3_port, signed_get(server, f"/{stored}/k?partNumber={value}"))
    assert_s3_error(reply, 400, "InvalidArgument")


@pytest.mark.parametrize("value", ["%C2%B2", HUGE, "0"], ids=["superscript", "huge", "zero"])
def test_list_buckets_max_buckets(server, value):
    reply = exchange(server.s3_port, signed_get(server, f"/?max-buckets={value}"))
    assert_s3_error(reply, 400, "InvalidArgument")


@pytest.mark.parametrize("value", ["%C2%B2", HUGE], ids=["superscript", "huge"])
def test_list_objects_max_keys(server, stored, value):
    reply = exchange(server.s3_port, signed_get(server, f"/{stored}?list-type=2&max-keys={value}"))
    assert_s3_error(reply, 400, "InvalidArgument")


@pytest.mark.parametrize("header", ["x-amz-max-parts", "x-amz-part-number-marker"])
@pytest.mark.parametrize("value", ["\u00b2", HUGE], ids=["superscript", "huge"])
def test_object_attributes_part_numbers(server, s3, bucket, header, value):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"x")["ETag"]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="mp",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    headers = {"x-amz-object-attributes": "ObjectParts", header: value}
    reply = exchange(server.s3_port, signed_get(server, f"/{bucket}/mp?attributes", headers))
    assert_s3_error(reply, 400, "InvalidArgument")


@pytest.mark.parametrize("value", ["\u00b2", HUGE], ids=["superscript", "huge"])
def test_decoded_content_length(server, s3, bucket, value):
    body = b"5\r\nhello\r\n0\r\n\r\n"
    data = signed_request(
        server,
        "PUT",
        f"/{bucket}/chunked",
        body=body,
        headers={"Content-Encoding": "aws-chunked", "X-Amz-Decoded-Content-Length": value},
        payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    )
    assert_s3_error(exchange(server.s3_port, data), 400, "InvalidArgument")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


@pytest.mark.parametrize("value", [HUGE, "%C2%B2", "-" + HUGE], ids=["huge", "superscript", "neg"])
def test_presigned_x_amz_expires(server, stored, value):
    target = (
        f"/{stored}/k?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=GK0123456789abcdef01234567%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
        f"&X-Amz-Date=20260101T000000Z&X-Amz-Expires={value}&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=" + "0" * 64
    )
    reply = exchange(
        server.s3_port,
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode(),
    )
    assert_s3_error(reply, 400, "AuthorizationQueryParametersError")


def test_sigv2_presigned_expires_of_5000_digits(server, stored):
    target = f"/{stored}/k?AWSAccessKeyId=GK0123456789abcdef01234567&Signature=x&Expires={HUGE}"
    reply = exchange(
        server.s3_port,
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode(),
    )
    assert_s3_error(reply, 403, "AccessDenied")


def test_range_of_5000_digits_is_ignored(server, stored):
    reply = exchange(
        server.s3_port, signed_get(server, f"/{stored}/k", {"Range": f"bytes=0-{HUGE}"})
    )
    assert reply is not None
    assert (reply.status, reply.body) == (200, b"0123456789")


@pytest.mark.parametrize(
    "value", [f"bytes=0-{HUGE}", "bytes=\u00b2-3"], ids=["huge", "superscript"]
)
def test_copy_source_range(server, s3, stored, value):
    upload = s3.create_multipart_upload(Bucket=stored, Key="copy")["UploadId"]
    data = signed_request(
        server,
        "PUT",
        f"/{stored}/copy?partNumber=1&uploadId={upload}",
        headers={"x-amz-copy-source": f"/{stored}/k", "x-amz-copy-source-range": value},
    )
    assert_s3_error(exchange(server.s3_port, data), 400, "InvalidArgument")


@pytest.mark.parametrize("version", ["sigv2", "sigv4"])
def test_access_key_id_of_invalid_utf8(server, stored, version):
    now = datetime.now(UTC)
    if version == "sigv2":
        dated = f"Date: {format_datetime(now, usegmt=True)}\r\n".encode()
        authorization = b"AWS \xff\xfe:signature"
    else:
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        dated = f"x-amz-date: {amz_date}\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n".encode()
        authorization = (
            f"AWS4-HMAC-SHA256 Credential=\xff/{amz_date[:8]}/us-east-1/s3/aws4_request, "
            f"SignedHeaders=host, Signature={'0' * 64}"
        ).encode("latin-1")
    head = f"GET /{stored}/k HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
    reply = exchange(
        server.s3_port, head + dated + b"Authorization: " + authorization + b"\r\n\r\n"
    )
    assert_s3_error(reply, 403, "InvalidAccessKeyId")
