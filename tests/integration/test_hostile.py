"""Hostile and malformed input against a real server.

Every case checks that the server answers with S3 error XML of the right
status and code (or closes the connection where no answer is possible),
never a 500 or a traceback, and keeps serving normal requests afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from test_auth import Reply, client_error, error_field, lowered, object_exists, sign

MAX_OBJECT_PART = 5 << 30


@pytest.fixture(autouse=True)
def still_serving(server, s3) -> Iterator[None]:
    """After each case: the server still answers and has logged no traceback meanwhile."""
    log_start = len(server.log())
    yield
    assert s3.list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200
    new_log = server.log()[log_start:]
    assert "Traceback" not in new_log, new_log[-5000:]


def exchange(port: int, data: bytes, *, close_input: bool = False) -> Reply | None:
    """Send raw bytes and read one response; None if the server closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        try:
            sock.sendall(data)
            if close_input:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking everything
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            return Reply(response.status, lowered(response.getheaders()), response.read())
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None


def assert_s3_error(reply: Reply | None, status: int, code: str) -> None:
    assert reply is not None, "the server closed the connection without answering"
    assert b"Traceback" not in reply.body
    assert (reply.status, reply.code) == (status, code), reply.body
    assert reply.headers["content-type"] == "application/xml"


def signed_request(
    server,
    method: str,
    target: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    payload_hash: str | None = None,
) -> bytes:
    """A whole signed request as raw bytes; the body and framing are sent as given."""
    signed = sign(
        method,
        server.endpoint + target,
        headers={"Connection": "close", **(headers or {})},
        payload_hash=payload_hash or hashlib.sha256(body).hexdigest(),
    )
    signed["Host"] = f"127.0.0.1:{server.s3_port}"
    if "Content-Length" not in signed and "Transfer-Encoding" not in signed:
        signed["Content-Length"] = str(len(body))
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in signed.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def listed_keys(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


# --- broken HTTP ------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\xff\x13\x37 garbage \xfe\r\n\r\n",
        bytes(range(256)),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\xaa" * 64,
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
    ],
    ids=["binary", "all-bytes", "tls-hello", "http-9.9", "http2-preface", "header-no-colon"],
)
def test_garbage_instead_of_a_request(server, data):
    assert_s3_error(exchange(server.s3_port, data), 400, "BadRequest")


def test_request_line_of_100_kib(server):
    data = b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert_s3_error(exchange(server.s3_port, data), 431, "RequestHeaderSectionTooLarge")


def test_ten_thousand_headers(server):
    fields = b"".join(b"X-Field-%d: v\r\n" % i for i in range(10_000))
    data = b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"
    assert_s3_error(exchange(server.s3_port, data), 431, "RequestHeaderSectionTooLarge")


def test_nul_in_a_header_value(server):
    data = b"GET / HTTP/1.1\r\nHost: x\r\nX-Amz-Meta-A: a\x00b\r\n\r\n"
    assert_s3_error(exchange(server.s3_port, data), 400, "BadRequest")


@pytest.mark.parametrize(
    "content_length",
    ["-5", "abc", "5 5", "+5", "99999999999999999999999", "5\r\nContent-Length: 6"],
    ids=["negative", "letters", "two-numbers", "plus-sign", "overflow", "repeated"],
)
def test_bad_content_length(server, bucket, content_length):
    data = (
        f"PUT /{bucket}/k HTTP/1.1\r\nHost: x\r\nContent-Length: {content_length}\r\n\r\nhello"
    ).encode()
    assert_s3_error(exchange(server.s3_port, data), 400, "BadRequest")
    assert not object_exists(server.client(), bucket, "k")


@pytest.mark.parametrize("method", ["BREW", "PROPFIND", "PATCH"])
def test_unknown_method(server, bucket, method):
    reply = exchange(server.s3_port, signed_request(server, method, f"/{bucket}/k"))
    assert_s3_error(reply, 405, "MethodNotAllowed")


def test_many_slow_connections_do_not_starve_the_server(server, s3, bucket):
    slow = []
    try:
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", server.s3_port), timeout=15)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
            slow.append(sock)
        s3.put_object(Bucket=bucket, Key="during", Body=b"still here")
        assert s3.get_object(Bucket=bucket, Key="during")["Body"].read() == b"still here"
    finally:
        for sock in slow:
            sock.close()


# --- request targets ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["%ZZ", "a%", "a%4", "a%FFb", "%C3%28"])
def test_malformed_path_encoding(server, bucket, path):
    for method in ("GET", "PUT"):
        reply = exchange(server.s3_port, signed_request(server, method, f"/{bucket}/{path}"))
        assert_s3_error(reply, 400, "InvalidURI")
    assert listed_keys(server.client(), bucket) == []


def test_invalid_utf8_in_the_query(server, bucket):
    reply = exchange(
        server.s3_port, signed_request(server, "GET", f"/{bucket}?list-type=2&prefix=%FF")
    )
    assert_s3_error(reply, 400, "InvalidArgument")


def test_path_traversal_keys_are_plain_keys(server, s3, bucket):
    marker = f"granary-escape-{uuid.uuid4().hex}"
    keys = ["../../etc/passwd", f"../../../../../../../../tmp/{marker}", "a/../../b", ".."]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    encoded = f"/{bucket}/..%2F..%2F{marker}"
    reply = exchange(server.s3_port, signed_request(server, "PUT", encoded, body=b"encoded"))
    assert reply is not None and reply.status == 200, reply

    assert sorted(listed_keys(s3, bucket)) == sorted([*keys, f"../../{marker}"])
    for key in keys:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    assert s3.get_object(Bucket=bucket, Key=f"../../{marker}")["Body"].read() == b"encoded"
    for folder in (Path("/tmp"), server.root, server.root.parent, server.root.parent.parent):
        assert not (folder / marker).exists()
    assert not any(marker in str(path) for path in server.root.rglob("*"))


def test_max_keys_not_a_number(server, bucket):
    for query in ("list-type=2&max-keys=abc", "max-keys=1x", "list-type=2&max-keys=-1"):
        reply = exchange(server.s3_port, signed_request(server, "GET", f"/{bucket}?{query}"))
        assert_s3_error(reply, 400, "InvalidArgument")


@pytest.mark.parametrize(
    "call",
    [
        lambda s3, b: s3.get_bucket_cors(Bucket=b),
        lambda s3, b: s3.get_bucket_website(Bucket=b),
        lambda s3, b: s3.get_bucket_policy(Bucket=b),
        lambda s3, b: s3.put_bucket_policy(Bucket=b, Policy="{}"),
    ],
    ids=[
        "cors",
        "website",
        "policy",
        "put-policy",
    ],
)
def test_unsupported_sub_resources(s3, bucket, call):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as caught:
        call(s3, bucket)
    assert client_error(caught.value) == (501, "NotImplemented")


# --- bodies -------------------------------------------------------------------------


@pytest.mark.parametrize(("declared", "sent"), [(1000, 10), (300_000, 100_000)])
def test_body_shorter_than_content_length(server, bucket, declared, sent):
    head = signed_request(
        server,
        "PUT",
        f"/{bucket}/short",
        headers={"Content-Length": str(declared)},
        payload_hash="UNSIGNED-PAYLOAD",
    )
    reply = exchange(server.s3_port, head + b"x" * sent, close_input=True)
    if reply is not None:
        assert_s3_error(reply, 400, "IncompleteBody")
    assert not object_exists(server.client(), bucket, "short")


def test_malformed_chunked_transfer_encoding(server, bucket):
    request = signed_request(
        server,
        "PUT",
        f"/{bucket}/chunked",
        headers={"Transfer-Encoding": "chunked"},
        body=b"5\r\nhello\r\nzz\r\n",
        payload_hash="UNSIGNED-PAYLOAD",
    )
    reply = exchange(server.s3_port, request, close_input=True)
    if reply is not None:
        assert_s3_error(reply, 400, "IncompleteBody")
    assert not object_exists(server.client(), bucket, "chunked")


def test_put_over_five_gib_is_refused_before_the_body(server, bucket):
    head = signed_request(
        server,
        "PUT",
        f"/{bucket}/huge",
        headers={"Content-Length": str(MAX_OBJECT_PART + 1), "Expect": "100-continue"},
        payload_hash="UNSIGNED-PAYLOAD",
    )
    reply = exchange(server.s3_port, head)
    assert_s3_error(reply, 400, "EntityTooLarge")
    assert not object_exists(server.client(), bucket, "huge")


def delete_objects_request(server, bucket: str, body: bytes) -> bytes:
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    return signed_request(
        server, "POST", f"/{bucket}?delete", body=body, headers={"Content-MD5": md5}
    )


DELETE_BODIES = {
    "doctype-entity": b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e "keep">]>'
    b"<Delete><Object><Key>&e;</Key></Object></Delete>",
    "external-entity": b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    b"<Delete><Object><Key>&e;</Key></Object></Delete>",
    "1001-keys": b"<Delete>"
    + b"".join(b"<Object><Key>keep</Key></Object>" for _ in range(1001))
    + b"</Delete>",
    "unclosed": b"<Delete><Object><Key>keep</Key></Object>",
    "binary": b"\x00\xff\xfe<Delete>",
    "wrong-root": b"<Remove><Object><Key>keep</Key></Object></Remove>",
    "no-objects": b"<Delete></Delete>",
}


@pytest.mark.parametrize("body", DELETE_BODIES.values(), ids=DELETE_BODIES.keys())
def test_delete_objects_with_a_bad_body(server, s3, bucket, body):
    s3.put_object(Bucket=bucket, Key="keep", Body=b"x")
    reply = exchange(server.s3_port, delete_objects_request(server, bucket, body))
    assert_s3_error(reply, 400, "MalformedXML")
    assert b"root:" not in reply.body
    assert listed_keys(s3, bucket) == ["keep"]


@pytest.mark.parametrize(
    "body",
    [b"garbage", b"<CompleteMultipartUpload><Part>", b"<CompleteMultipartUpload/>"],
    ids=["text", "unclosed", "no-parts"],
)
def test_complete_multipart_upload_with_a_bad_body(server, s3, bucket, body):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mpu")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="mpu", UploadId=upload_id, PartNumber=1, Body=b"part")
    target = f"/{bucket}/mpu?uploadId={upload_id}"
    reply = exchange(server.s3_port, signed_request(server, "POST", target, body=body))
    assert_s3_error(reply, 400, "MalformedXML")
    assert not object_exists(s3, bucket, "mpu")
    parts = s3.list_parts(Bucket=bucket, Key="mpu", UploadId=upload_id)["Parts"]
    assert [p["PartNumber"] for p in parts] == [1]
    s3.abort_multipart_upload(Bucket=bucket, Key="mpu", UploadId=upload_id)


# --- buckets ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["ab", "UPPER", "a..b", "192.168.1.1", "-dash", "a" * 64, "under_score"]
)
def test_invalid_bucket_names(s3, name):
    with pytest.raises(ClientError) as caught:
        s3.create_bucket(Bucket=name)
    assert client_error(caught.value) == (400, "InvalidBucketName")


def test_create_bucket_twice(s3, bucket):
    """In us-east-1 (the default region) S3 answers 200 to the owner; elsewhere 409
    BucketAlreadyOwnedByYou (test_buckets.py checks that one)."""
    s3.create_bucket(Bucket=bucket)
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_delete_non_empty_bucket(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as caught:
        s3.delete_bucket(Bucket=bucket)
    assert client_error(caught.value) == (409, "BucketNotEmpty")
    assert listed_keys(s3, bucket) == ["k"]
    s3.delete_object(Bucket=bucket, Key="k")
    s3.delete_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as caught:
        s3.head_bucket(Bucket=bucket)
    assert client_error(caught.value)[0] == 404


def test_error_replies_carry_the_request_id(server):
    reply = exchange(server.s3_port, b"\x00garbage\r\n\r\n")
    assert reply is not None
    assert error_field(reply.body, "RequestId") == reply.headers["x-amz-request-id"]
