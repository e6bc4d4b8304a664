"""POST Object (browser uploads) against a real server: forms built by botocore's
generate_presigned_post, sent by hand as multipart/form-data over http.client."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError
from conftest import ACCESS_KEY, SECRET_KEY, s3_client


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    """Lower-case names."""
    body: bytes

    def error(self, name: str) -> str | None:
        return ET.fromstring(self.body).findtext(name) if self.body else None


def form_body(
    fields: list[tuple[str, str]], file: bytes | None, filename: str, boundary: str
) -> bytes:
    """A multipart/form-data body: the fields, then the file part unless `file` is None."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value.encode()
        + b"\r\n"
        for name, value in fields
    ]
    if file is not None:
        parts.append(
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="file"; filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'.encode()
            + file
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts)


def post_form(
    endpoint: str,
    bucket: str,
    fields: dict[str, str] | list[tuple[str, str]],
    file: bytes | None = b"hello",
    *,
    filename: str = "photo.png",
    piece: int | None = None,
) -> Reply:
    """POST a form; with `piece`, the body goes out chunked in pieces of that size."""
    items = list(fields.items()) if isinstance(fields, dict) else fields
    boundary = "----granary" + secrets.token_hex(8)
    body = form_body(items, file, filename, boundary)
    url = urlsplit(endpoint)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    try:
        if piece is None:
            connection.request("POST", f"/{bucket}", body=body, headers=headers)
        else:
            pieces = (body[i : i + piece] for i in range(0, len(body), piece))
            connection.request(
                "POST", f"/{bucket}", body=pieces, headers=headers, encode_chunked=True
            )
        response = connection.getresponse()
        return Reply(
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            response.read(),
        )
    finally:
        connection.close()


@pytest.fixture
def s3v4(server):
    return server.client(signature_version="s3v4")


def presigned_fields(s3v4, bucket: str, key: str, fields=None, conditions=None, expires=600):
    post = s3v4.generate_presigned_post(
        bucket, key, Fields=fields, Conditions=conditions, ExpiresIn=expires
    )
    return post["fields"]


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def assert_absent(s3, bucket: str, key: str) -> None:
    with pytest.raises(ClientError) as caught:
        s3.head_object(Bucket=bucket, Key=key)
    assert caught.value.response["Error"]["Code"] == "404"


def test_small_upload_with_metadata(server, s3, s3v4, bucket):
    fields = presigned_fields(
        s3v4,
        bucket,
        "docs/note.txt",
        fields={"Content-Type": "text/plain", "x-amz-meta-colour": "blue", "acl": "private"},
        conditions=[
            ["starts-with", "$Content-Type", "text/"],
            {"x-amz-meta-colour": "blue"},
            {"acl": "private"},
        ],
    )
    reply = post_form(server.endpoint, bucket, fields, b"small body")
    assert reply.status == 204, reply.body
    assert reply.headers["etag"] == f'"{md5_hex(b"small body")}"'
    assert reply.headers["location"].endswith(f"/{bucket}/docs/note.txt")
    got = s3.get_object(Bucket=bucket, Key="docs/note.txt")
    assert got["Body"].read() == b"small body"
    assert got["ContentType"] == "text/plain"
    assert got["Metadata"] == {"colour": "blue"}
    assert got["ETag"] == reply.headers["etag"]


def test_large_upload_streamed_in_small_pieces(server, s3, s3v4, bucket):
    """A multi-block file sent chunked in odd-sized pieces, so boundaries and
    blocks are split across reads."""
    data = secrets.token_bytes(3 * 1024 * 1024 + 12345)
    fields = presigned_fields(
        s3v4, bucket, "big.bin", conditions=[["content-length-range", 1, 8 * 1024 * 1024]]
    )
    reply = post_form(server.endpoint, bucket, fields, data, piece=65_521)
    assert reply.status == 204, reply.body
    assert reply.headers["etag"] == f'"{md5_hex(data)}"'
    got = s3.get_object(Bucket=bucket, Key="big.bin")
    assert got["Body"].read() == data
    assert got["ContentType"] == "binary/octet-stream"


def test_body_that_looks_like_a_boundary(server, s3, s3v4, bucket):
    """File content holding boundary-like lines is stored byte for byte."""
    fields = presigned_fields(s3v4, bucket, "tricky")
    data = b"\r\n--\r\n------granary\r\n--" * 5000
    reply = post_form(server.endpoint, bucket, fields, data, piece=7)
    assert reply.status == 204, reply.body
    assert s3.get_object(Bucket=bucket, Key="tricky")["Body"].read() == data


def test_filename_variable_names_the_key(server, s3, s3v4, bucket):
    fields = presigned_fields(s3v4, bucket, "uploads/${filename}")
    reply = post_form(server.endpoint, bucket, fields, b"png bytes", filename="cat.png")
    assert reply.status == 204, reply.body
    assert s3.get_object(Bucket=bucket, Key="uploads/cat.png")["Body"].read() == b"png bytes"


def test_success_action_status_201_answers_post_response(server, s3v4, bucket):
    fields = presigned_fields(
        s3v4,
        bucket,
        "made",
        fields={"success_action_status": "201"},
        conditions=[{"success_action_status": "201"}],
    )
    reply = post_form(server.endpoint, bucket, fields, b"data")
    assert reply.status == 201, reply.body
    root = ET.fromstring(reply.body)
    assert root.tag == "PostResponse"
    assert root.findtext("Bucket") == bucket
    assert root.findtext("Key") == "made"
    assert root.findtext("ETag") == f'"{md5_hex(b"data")}"'
    assert root.findtext("Location").endswith(f"/{bucket}/made")


def test_success_action_status_200_and_unknown_status(server, s3v4, bucket):
    for status, expected in (("200", 200), ("404", 204)):
        fields = presigned_fields(
            s3v4,
            bucket,
            "k",
            fields={"success_action_status": status},
            conditions=[{"success_action_status": status}],
        )
        reply = post_form(server.endpoint, bucket, fields, b"data")
        assert reply.status == expected, reply.body
        assert reply.body == b""


def test_success_action_redirect(server, s3, s3v4, bucket):
    target = "https://example.invalid/done?from=form"
    fields = presigned_fields(
        s3v4,
        bucket,
        "a b+c",
        fields={"success_action_redirect": target},
        conditions=[{"success_action_redirect": target}],
    )
    reply = post_form(server.endpoint, bucket, fields, b"redirected")
    assert reply.status == 303, reply.body
    etag = md5_hex(b"redirected")
    assert reply.headers["location"] == (
        f"{target}&bucket={bucket}&key=a%20b%2Bc&etag=%22{etag}%22"
    )
    assert s3.get_object(Bucket=bucket, Key="a b+c")["Body"].read() == b"redirected"
    # Not an http(s) URL: ignored, and the status field decides.
    fields = presigned_fields(
        s3v4,
        bucket,
        "k",
        fields={"success_action_redirect": "ftp://x/", "success_action_status": "201"},
        conditions=[
            ["starts-with", "$success_action_redirect", ""],
            {"success_action_status": "201"},
        ],
    )
    assert post_form(server.endpoint, bucket, fields).status == 201


def test_expired_policy(server, s3, s3v4, bucket):
    fields = presigned_fields(s3v4, bucket, "late", expires=-60)
    reply = post_form(server.endpoint, bucket, fields)
    assert reply.status == 403
    assert reply.error("Code") == "AccessDenied"
    assert reply.error("Message") == "Invalid according to Policy: Policy expired."
    assert_absent(s3, bucket, "late")


def test_failed_condition(server, s3, s3v4, bucket):
    fields = presigned_fields(
        s3v4, bucket, "k", fields={"acl": "public-read"}, conditions=[{"acl": "private"}]
    )
    reply = post_form(server.endpoint, bucket, fields)
    assert reply.status == 403
    assert reply.error("Code") == "AccessDenied"
    assert reply.error("Message") == (
        'Invalid according to Policy: Policy Condition failed: ["eq", "$acl", "private"]'
    )
    assert_absent(s3, bucket, "k")


def test_field_not_covered_by_policy(server, s3, s3v4, bucket):
    fields = presigned_fields(s3v4, bucket, "k")
    fields["x-amz-meta-sneaky"] = "yes"
    fields["x-ignore-this"] = "fine"
    reply = post_form(server.endpoint, bucket, fields)
    assert reply.status == 403
    assert (
        reply.error("Message")
        == "Invalid according to Policy: Extra input fields: x-amz-meta-sneaky"
    )
    assert_absent(s3, bucket, "k")


@pytest.mark.parametrize(
    ("size", "code"),
    [(3, "EntityTooSmall"), (2000, "EntityTooLarge"), (3 * 1024 * 1024, "EntityTooLarge")],
)
def test_content_length_range(server, s3, s3v4, bucket, size, code):
    fields = presigned_fields(
        s3v4, bucket, "sized", conditions=[["content-length-range", 10, 1000]]
    )
    reply = post_form(server.endpoint, bucket, fields, b"x" * size)
    assert reply.status == 400
    assert reply.error("Code") == code
    assert_absent(s3, bucket, "sized")


def test_bad_signature_and_unknown_key(server, s3, s3v4, bucket):
    fields = presigned_fields(s3v4, bucket, "k")
    forged = dict(fields, **{"x-amz-signature": "0" * 64})
    reply = post_form(server.endpoint, bucket, forged)
    assert (reply.status, reply.error("Code")) == (403, "SignatureDoesNotMatch")
    unknown = s3_client(server.endpoint, access_key="GKunknown", signature_version="s3v4")
    reply = post_form(server.endpoint, bucket, presigned_fields(unknown, bucket, "k"))
    assert (reply.status, reply.error("Code")) == (403, "InvalidAccessKeyId")
    assert_absent(s3, bucket, "k")


def test_form_without_file(server, s3v4, bucket):
    reply = post_form(server.endpoint, bucket, presigned_fields(s3v4, bucket, "k"), file=None)
    assert (reply.status, reply.error("Code")) == (400, "InvalidArgument")


def test_anonymous_form_is_denied(server, s3, bucket):
    reply = post_form(server.endpoint, bucket, {"key": "anon"})
    assert (reply.status, reply.error("Code")) == (403, "AccessDenied")
    assert_absent(s3, bucket, "anon")


def test_signer_needs_write_permission(server, s3, bucket):
    other = json.loads(server.cli("key", "create", "post-other", "--json").stdout)
    client = s3_client(
        server.endpoint,
        access_key=other["key_id"],
        secret_key=other["secret"],
        signature_version="s3v4",
    )
    reply = post_form(server.endpoint, bucket, presigned_fields(client, bucket, "k"))
    assert (reply.status, reply.error("Code")) == (403, "AccessDenied")
    assert_absent(s3, bucket, "k")
    server.cli("bucket", "allow", bucket, "--write", "--key", other["key_id"])
    reply = post_form(server.endpoint, bucket, presigned_fields(client, bucket, "k"))
    assert reply.status == 204, reply.body


def sigv2_fields(bucket: str, key: str, conditions: list) -> dict[str, str]:
    expiration = (datetime.now(UTC) + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    document = {"expiration": expiration, "conditions": [{"bucket": bucket}, *conditions]}
    policy = base64.b64encode(json.dumps(document).encode()).decode()
    digest = hmac.new(SECRET_KEY.encode(), policy.encode(), hashlib.sha1).digest()
    return {
        "key": key,
        "AWSAccessKeyId": ACCESS_KEY,
        "policy": policy,
        "signature": base64.b64encode(digest).decode(),
    }


def test_sigv2_signed_policy_and_case_insensitive_names(server, s3, bucket):
    fields = sigv2_fields(bucket, "v2.txt", [["StArTs-WiTh", "$KeY", "v2"]])
    fields["kEy"] = fields.pop("key")
    reply = post_form(server.endpoint, bucket, fields, b"old style")
    assert reply.status == 204, reply.body
    assert s3.get_object(Bucket=bucket, Key="v2.txt")["Body"].read() == b"old style"


def test_checksum_field(server, s3, bucket):
    data = b"checked content"
    good = base64.b64encode(hashlib.sha256(data).digest()).decode()
    fields = sigv2_fields(bucket, "summed", [["starts-with", "$key", ""]])
    reply = post_form(server.endpoint, bucket, {**fields, "x-amz-checksum-sha256": good}, data)
    assert reply.status == 204, reply.body
    assert reply.headers["x-amz-checksum-sha256"] == good
    bad = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    fields = sigv2_fields(bucket, "summed-bad", [["starts-with", "$key", ""]])
    reply = post_form(server.endpoint, bucket, {**fields, "x-amz-checksum-sha256": bad}, data)
    assert (reply.status, reply.error("Code")) == (400, "BadDigest")
    assert_absent(s3, bucket, "summed-bad")


def test_malformed_policy(server, bucket):
    fields = sigv2_fields(bucket, "k", [{}])
    reply = post_form(server.endpoint, bucket, fields)
    assert (reply.status, reply.error("Code")) == (400, "InvalidPolicyDocument")
