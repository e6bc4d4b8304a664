"""Authentication and authorisation against a real server: SigV4 headers,
presigned URLs, aws-chunked bodies, trailers, and per-bucket key permissions."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import http.client
import json
import socket
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from conftest import ACCESS_KEY, SECRET_KEY, node_config, s3_client
from test_clients import s3cmd_runner, write_file

REGION = "us-east-1"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def code(self) -> str | None:
        return error_field(self.body, "Code")

    @property
    def message(self) -> str | None:
        return error_field(self.body, "Message")


def error_field(body: bytes, name: str) -> str | None:
    if not body.startswith(b"<?xml"):
        return None
    root = ET.fromstring(body)
    assert root.tag == "Error", body
    return root.findtext(name)


def lowered(headers) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


def client_error(exc: ClientError) -> tuple[int, str]:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]


class _ChosenPayloadAuth(S3SigV4Auth):
    """botocore's S3 signer (the path is signed as sent), with the payload hash we choose."""

    def __init__(self, credentials: Credentials, region: str, payload_hash: str) -> None:
        super().__init__(credentials, "s3", region)
        self._payload_hash = payload_hash

    def payload(self, request: AWSRequest) -> str:
        return self._payload_hash


def sign(
    method: str,
    url: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    payload_hash: str | None = None,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    region: str = REGION,
) -> dict[str, str]:
    """Headers of a request signed by botocore; the payload hash defaults to the body's."""
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    signer = _ChosenPayloadAuth(
        Credentials(access_key, secret_key),
        region,
        payload_hash or hashlib.sha256(body).hexdigest(),
    )
    signer.add_auth(request)
    return dict(request.headers.items())


def send(
    port: int, method: str, target: str, *, body: bytes = b"", headers: dict | None = None
) -> Reply:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, lowered(response.getheaders()), response.read())
    finally:
        connection.close()


def send_signed(server, method: str, target: str, *, body: bytes = b"", **sign_args) -> Reply:
    headers = sign(method, server.endpoint + target, body=body, **sign_args)
    return send(server.s3_port, method, target, body=body, headers=headers)


def url_open(url: str, *, method: str = "GET", data: bytes | None = None) -> Reply:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Reply(response.status, lowered(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, lowered(error.headers.items()), error.read())


def object_exists(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        assert client_error(exc)[0] == 404
        return False
    return True


@pytest.fixture
def shifted_clock(monkeypatch):
    """Makes botocore's signers (Python and CRT) sign as if their clock were off by an offset."""

    def shift(offset: datetime.timedelta) -> None:
        def shifted_now(remove_tzinfo: bool = True) -> datetime.datetime:
            moment = datetime.datetime.now(datetime.UTC) + offset
            return moment.replace(tzinfo=None) if remove_tzinfo else moment

        for name in ("botocore.auth", "botocore.crt.auth"):
            if name in sys.modules:
                monkeypatch.setattr(sys.modules[name], "get_current_datetime", shifted_now)

    return shift


# --- presigned URLs -------------------------------------------------------------


@pytest.fixture
def presigner(server):
    """A client that presigns with SigV4 (boto3 presigns with SigV2 by default)."""
    return server.client(signature_version="s3v4")


def test_presigned_get_and_put_with_plain_http(s3, presigner, bucket):
    put_url = presigner.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "via-url"}, ExpiresIn=300
    )
    assert url_open(put_url, method="PUT", data=b"presigned body").status == 200
    assert s3.get_object(Bucket=bucket, Key="via-url")["Body"].read() == b"presigned body"

    get_url = presigner.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "via-url"}, ExpiresIn=300
    )
    reply = url_open(get_url)
    assert (reply.status, reply.body) == (200, b"presigned body")


def test_expired_presigned_url_is_refused(s3, presigner, bucket, shifted_clock):
    s3.put_object(Bucket=bucket, Key="old", Body=b"x")
    shifted_clock(-datetime.timedelta(hours=1))
    url = presigner.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "old"}, ExpiresIn=60
    )
    reply = url_open(url)
    assert (reply.status, reply.code, reply.message) == (403, "AccessDenied", "Request has expired")


def _replace_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    pairs = [p.partition("=") for p in parts.query.split("&")]
    query = "&".join(f"{k}={value if k == name else v}" for k, _, v in pairs)
    return urlunsplit(parts._replace(query=query))


def _flip_last_char(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


@pytest.mark.parametrize("tamper", ["key", "signature", "expires"])
def test_tampered_presigned_url_is_refused(s3, presigner, bucket, tamper):
    s3.put_object(Bucket=bucket, Key="mine", Body=b"secret")
    s3.put_object(Bucket=bucket, Key="other", Body=b"other secret")
    url = presigner.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "mine"}, ExpiresIn=60
    )
    if tamper == "key":
        url = url.replace(f"/{bucket}/mine?", f"/{bucket}/other?")
    elif tamper == "signature":
        signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
        url = _replace_param(url, "X-Amz-Signature", _flip_last_char(signature))
    else:
        url = _replace_param(url, "X-Amz-Expires", "3600")
    reply = url_open(url)
    assert (reply.status, reply.code) == (403, "SignatureDoesNotMatch")
    assert b"secret" not in reply.body


# --- SigV2 -----------------------------------------------------------------------


@pytest.fixture
def sigv2_client(server):
    """A client that signs every request with SigV2 (`Authorization: AWS key:signature`)."""
    return server.client(signature_version="s3")


@pytest.mark.parametrize("signature_version", [None, "s3"], ids=["default", "s3"])
def test_sigv2_presigned_get_and_put(server, s3, bucket, signature_version):
    presigner = server.client(signature_version=signature_version) if signature_version else s3
    put_url = presigner.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "v2 url/ü+"}, ExpiresIn=300
    )
    assert "AWSAccessKeyId=" in put_url
    # Sent without a Content-Type (urllib would add one, which SigV2 signs).
    split = urlsplit(put_url)
    reply = send(server.s3_port, "PUT", f"{split.path}?{split.query}", body=b"v2 body")
    assert reply.status == 200, reply.body
    assert s3.get_object(Bucket=bucket, Key="v2 url/ü+")["Body"].read() == b"v2 body"
    get_url = presigner.generate_presigned_url(
        "get_object",
        Params={"Bucket": bucket, "Key": "v2 url/ü+", "ResponseContentType": "text/x-v2"},
        ExpiresIn=300,
    )
    assert "AWSAccessKeyId=" in get_url
    reply = url_open(get_url)
    assert (reply.status, reply.body) == (200, b"v2 body")
    assert reply.headers["content-type"] == "text/x-v2"


def test_expired_sigv2_presigned_url_is_refused(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"private")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=-60
    )
    reply = url_open(url)
    assert (reply.status, reply.code, reply.message) == (403, "AccessDenied", "Request has expired")
    assert b"private" not in reply.body


@pytest.mark.parametrize("tamper", ["key", "signature", "expires"])
def test_tampered_sigv2_presigned_url_is_refused(s3, bucket, tamper):
    s3.put_object(Bucket=bucket, Key="k", Body=b"private")
    s3.put_object(Bucket=bucket, Key="other", Body=b"second secret")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=300
    )
    if tamper == "key":
        url = url.replace(f"/{bucket}/k?", f"/{bucket}/other?")
    elif tamper == "signature":
        url = _replace_param(
            url, "Signature", "AAAA" + parse_qs(urlsplit(url).query)["Signature"][0][4:]
        )
    else:
        expires = int(parse_qs(urlsplit(url).query)["Expires"][0])
        url = _replace_param(url, "Expires", str(expires + 3600))
    reply = url_open(url)
    assert (reply.status, reply.code) == (403, "SignatureDoesNotMatch")
    assert b"private" not in reply.body and b"second secret" not in reply.body


def test_sigv2_signed_requests(sigv2_client, s3, bucket):
    client = sigv2_client
    client.put_object(Bucket=bucket, Key="dir/a b", Body=b"one", Metadata={"colour": "blue"})
    head = client.head_object(Bucket=bucket, Key="dir/a b")
    assert head["Metadata"] == {"colour": "blue"}
    assert client.get_object(Bucket=bucket, Key="dir/a b", Range="bytes=1-")["Body"].read() == b"ne"
    listed = client.list_objects(Bucket=bucket, Prefix="dir/")
    assert [item["Key"] for item in listed["Contents"]] == ["dir/a b"]
    upload = client.create_multipart_upload(Bucket=bucket, Key="mpu")["UploadId"]
    etag = client.upload_part(
        Bucket=bucket, Key="mpu", UploadId=upload, PartNumber=1, Body=b"p" * 100
    )["ETag"]
    client.complete_multipart_upload(
        Bucket=bucket,
        Key="mpu",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    assert s3.get_object(Bucket=bucket, Key="mpu")["Body"].read() == b"p" * 100
    client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "mpu"}]})
    client.delete_object(Bucket=bucket, Key="dir/a b")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_sigv2_wrong_secret_and_unknown_key(server, bucket):
    wrong = s3_client(server.endpoint, secret_key="x" * 40, signature_version="s3")
    with pytest.raises(ClientError) as caught:
        wrong.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert client_error(caught.value) == (403, "SignatureDoesNotMatch")
    unknown = s3_client(server.endpoint, access_key="GKunknown", signature_version="s3")
    with pytest.raises(ClientError) as caught:
        unknown.list_objects(Bucket=bucket)
    assert client_error(caught.value) == (403, "InvalidAccessKeyId")
    assert not object_exists(server.client(), bucket, "k")


def sigv2_headers(
    method: str, resource: str, *, minutes: int = 0, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """Date and Authorization of a SigV2 request for `resource` (the signed bucket/key path)."""
    date = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=minutes)
    http_date = date.strftime("%a, %d %b %Y %H:%M:%S GMT")
    content_type = (extra or {}).get("Content-Type", "")
    text = f"{method}\n\n{content_type}\n{http_date}\n{resource}"
    signature = base64.b64encode(
        hmac.new(SECRET_KEY.encode(), text.encode(), hashlib.sha1).digest()
    ).decode()
    return {"Date": http_date, "Authorization": f"AWS {ACCESS_KEY}:{signature}", **(extra or {})}


@pytest.mark.parametrize("minutes", [-20, 20])
def test_sigv2_clock_skew_is_refused(server, bucket, minutes):
    headers = sigv2_headers("GET", f"/{bucket}/k", minutes=minutes)
    reply = send(server.s3_port, "GET", f"/{bucket}/k", headers=headers)
    assert (reply.status, reply.code) == (403, "RequestTimeTooSkewed")


def test_sigv2_virtual_host_style(own_server):
    own_server.config_text = node_config(own_server).replace(
        "[s3_api]\n", '[s3_api]\nroot_domain = ".s3.granary.test"\n'
    )
    own_server.start()
    own_server.client().create_bucket(Bucket="vhost")
    host = {"Host": f"vhost.s3.granary.test:{own_server.s3_port}"}
    put = sigv2_headers("PUT", "/vhost/dir/key.txt", extra={**host, "Content-Type": "text/x"})
    reply = send(own_server.s3_port, "PUT", "/dir/key.txt", body=b"hello", headers=put)
    assert reply.status == 200, reply.body
    get = sigv2_headers("GET", "/vhost/dir/key.txt", extra=host)
    reply = send(own_server.s3_port, "GET", "/dir/key.txt", headers=get)
    assert (reply.status, reply.body, reply.headers["content-type"]) == (200, b"hello", "text/x")
    listing = sigv2_headers("GET", "/vhost/", extra=host)
    reply = send(own_server.s3_port, "GET", "/?prefix=dir", headers=listing)
    assert reply.status == 200 and b"<Key>dir/key.txt</Key>" in reply.body
    # Signed for the key alone, without its bucket: not the resource S3 signs.
    wrong = sigv2_headers("GET", "/dir/key.txt", extra=host)
    reply = send(own_server.s3_port, "GET", "/dir/key.txt", headers=wrong)
    assert (reply.status, reply.code) == (403, "SignatureDoesNotMatch")


def test_s3cmd_with_signature_v2(server, s3, bucket, tmp_path):
    s3cmd = s3cmd_runner(server, tmp_path / "s3cmd-home", signature_v2=True)
    source = write_file(tmp_path / "up load.txt", b"from s3cmd v2\n")
    s3cmd("put", str(source), f"s3://{bucket}/s3cmd/up load.txt")
    assert (
        s3.get_object(Bucket=bucket, Key="s3cmd/up load.txt")["Body"].read() == source.read_bytes()
    )
    listing = s3cmd("ls", f"s3://{bucket}/s3cmd/")
    assert f"s3://{bucket}/s3cmd/up load.txt" in listing
    target = tmp_path / "down.txt"
    s3cmd("get", f"s3://{bucket}/s3cmd/up load.txt", str(target))
    assert target.read_bytes() == source.read_bytes()
    signed_url = s3cmd("signurl", f"s3://{bucket}/s3cmd/up load.txt", "+300")
    reply = url_open(signed_url.strip())
    assert (reply.status, reply.body) == (200, source.read_bytes())
    s3cmd("del", f"s3://{bucket}/s3cmd/up load.txt")
    assert not object_exists(s3, bucket, "s3cmd/up load.txt")


def test_presigned_url_for_missing_key(presigner, bucket):
    url = presigner.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "absent"}, ExpiresIn=60
    )
    reply = url_open(url)
    assert (reply.status, reply.code) == (404, "NoSuchKey")


# --- header signatures ------------------------------------------------------------


def test_wrong_secret_is_refused_and_stores_nothing(server, s3, bucket):
    intruder = s3_client(server.endpoint, secret_key="b" * 64)
    with pytest.raises(ClientError) as caught:
        intruder.put_object(Bucket=bucket, Key="k", Body=b"data")
    assert client_error(caught.value) == (403, "SignatureDoesNotMatch")
    assert not object_exists(s3, bucket, "k")


def test_unknown_access_key(server):
    stranger = s3_client(server.endpoint, access_key="GK" + "f" * 24)
    with pytest.raises(ClientError) as caught:
        stranger.list_buckets()
    assert client_error(caught.value) == (403, "InvalidAccessKeyId")


def test_anonymous_request_is_refused(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"private")
    reply = send(server.s3_port, "GET", f"/{bucket}/k")
    assert (reply.status, reply.code) == (403, "AccessDenied")
    assert b"private" not in reply.body


@pytest.mark.parametrize("minutes", [20, -20])
def test_clock_skew_is_refused(server, shifted_clock, minutes):
    shifted_clock(datetime.timedelta(minutes=minutes))
    with pytest.raises(ClientError) as caught:
        server.client().list_buckets()
    assert client_error(caught.value) == (403, "RequestTimeTooSkewed")


@pytest.mark.parametrize(
    "authorization",
    [
        "AWS4-HMAC-SHA256 Credential=nonsense, SignedHeaders=host, Signature=00",
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20250101/us-east-1/s3/aws4_request",
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20250101/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature",
    ],
    ids=["bad-credential", "missing-fields", "component-without-value"],
)
def test_malformed_authorization_header(server, authorization):
    reply = send(
        server.s3_port,
        "GET",
        "/",
        headers={"Authorization": authorization, "X-Amz-Content-SHA256": EMPTY_SHA256},
    )
    assert (reply.status, reply.code) == (400, "AuthorizationHeaderMalformed")


def test_wrong_region_in_scope(server):
    reply = send_signed(server, "GET", "/", region="eu-west-1")
    assert (reply.status, reply.code) == (400, "AuthorizationHeaderMalformed")
    assert error_field(reply.body, "Region") == REGION


def test_unsigned_payload_is_accepted(server, s3, bucket):
    reply = send_signed(
        server, "PUT", f"/{bucket}/unsigned", body=b"not hashed", payload_hash="UNSIGNED-PAYLOAD"
    )
    assert reply.status == 200, reply.body
    assert s3.get_object(Bucket=bucket, Key="unsigned")["Body"].read() == b"not hashed"


@pytest.mark.parametrize("size", [16, 200_000], ids=["inline", "blocks"])
def test_body_differing_from_signed_hash_is_refused(server, s3, bucket, size):
    signed_body = b"a" * size
    sent_body = b"b" * size
    headers = sign("PUT", f"{server.endpoint}/{bucket}/k", body=signed_body)
    reply = send(server.s3_port, "PUT", f"/{bucket}/k", body=sent_body, headers=headers)
    assert (reply.status, reply.code) == (400, "XAmzContentSHA256Mismatch")
    assert not object_exists(s3, bucket, "k")


# --- aws-chunked bodies ---------------------------------------------------------


def signing_key(secret: str, date: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signed_chunks(data: bytes, chunk_size: int, headers: dict[str, str]) -> list[bytes]:
    """aws-chunked frames of `data`, each signature chained on the previous one."""
    timestamp = headers["X-Amz-Date"]
    seed = headers["Authorization"].rsplit("Signature=", 1)[1]
    scope = f"{timestamp[:8]}/{REGION}/s3/aws4_request"
    key = signing_key(SECRET_KEY, timestamp[:8])
    pieces = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] + [b""]
    frames = []
    previous = seed
    for piece in pieces:
        text = "\n".join(
            (
                "AWS4-HMAC-SHA256-PAYLOAD",
                timestamp,
                scope,
                previous,
                EMPTY_SHA256,
                hashlib.sha256(piece).hexdigest(),
            )
        )
        previous = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
        frames.append(b"%x;chunk-signature=%s\r\n%s\r\n" % (len(piece), previous.encode(), piece))
    return frames


def frames_length(data_size: int, chunk_size: int) -> int:
    sizes = [min(chunk_size, data_size - i) for i in range(0, data_size, chunk_size)] + [0]
    return sum(len(b"%x;chunk-signature=" % s) + 64 + 2 + s + 2 for s in sizes)


def streaming_put(server, bucket: str, key: str, data: bytes, chunk_size: int):
    """Signed headers for an aws-chunked PutObject of `data`, and its frames."""
    headers = sign(
        "PUT",
        f"{server.endpoint}/{bucket}/{key}",
        headers={
            "Content-Encoding": "aws-chunked",
            "Content-Length": str(frames_length(len(data), chunk_size)),
            "X-Amz-Decoded-Content-Length": str(len(data)),
        },
        payload_hash=STREAMING_SIGNED,
    )
    return headers, signed_chunks(data, chunk_size, headers)


def test_signed_streaming_upload(server, s3, bucket):
    data = bytes(range(256)) * 600
    headers, frames = streaming_put(server, bucket, "streamed", data, 64 * 1024)
    body = b"".join(frames)
    assert len(body) == int(headers["Content-Length"])
    reply = send(server.s3_port, "PUT", f"/{bucket}/streamed", body=body, headers=headers)
    assert reply.status == 200, reply.body
    assert reply.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert s3.get_object(Bucket=bucket, Key="streamed")["Body"].read() == data


def test_bad_chunk_signature_stores_nothing(server, s3, bucket):
    data = b"z" * 150_000
    headers, frames = streaming_put(server, bucket, "streamed", data, 64 * 1024)
    head, rest = frames[1].split(b"\r\n", 1)
    frames[1] = _flip_last_char(head.decode()).encode() + b"\r\n" + rest
    reply = send(
        server.s3_port, "PUT", f"/{bucket}/streamed", body=b"".join(frames), headers=headers
    )
    assert (reply.status, reply.code) == (403, "SignatureDoesNotMatch")
    assert not object_exists(s3, bucket, "streamed")


def trailer_body(data: bytes, trailer_value: str, name: str = "x-amz-checksum-crc32") -> bytes:
    trailer = f"{name}:{trailer_value}\r\n" if name else ""
    return b"%x\r\n%s\r\n0\r\n%s\r\n" % (len(data), data, trailer.encode())


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def put_with_trailer(
    server, bucket: str, data: bytes, trailer_value: str, name: str = "x-amz-checksum-crc32"
) -> Reply:
    body = trailer_body(data, trailer_value, name)
    return send_signed(
        server,
        "PUT",
        f"/{bucket}/trailed",
        body=body,
        headers={
            "Content-Encoding": "aws-chunked",
            "X-Amz-Decoded-Content-Length": str(len(data)),
            "X-Amz-Trailer": "x-amz-checksum-crc32",
            "X-Amz-Sdk-Checksum-Algorithm": "CRC32",
        },
        payload_hash=STREAMING_UNSIGNED_TRAILER,
    )


@pytest.mark.parametrize("size", [100, 50_000], ids=["inline", "blocks"])
def test_unsigned_trailer_checksum(server, s3, bucket, size):
    data = b"trailer data " * (size // 13)
    reply = put_with_trailer(server, bucket, data, crc32_b64(data))
    assert reply.status == 200, reply.body
    assert reply.headers.get("x-amz-checksum-crc32") == crc32_b64(data)
    assert s3.get_object(Bucket=bucket, Key="trailed")["Body"].read() == data


@pytest.mark.parametrize("size", [100, 50_000], ids=["inline", "blocks"])
def test_wrong_trailer_checksum_stores_nothing(server, s3, bucket, size):
    data = b"trailer data " * (size // 13)
    reply = put_with_trailer(server, bucket, data, crc32_b64(data + b"!"))
    assert (reply.status, reply.code) == (400, "BadDigest")
    assert not object_exists(s3, bucket, "trailed")


@pytest.mark.parametrize(
    ("name", "value"),
    [("", ""), ("x-amz-checksum-sha256", base64.b64encode(hashlib.sha256(b"x").digest()).decode())],
    ids=["missing", "other-algorithm"],
)
def test_trailer_other_than_declared_is_refused(server, s3, bucket, name, value):
    reply = put_with_trailer(server, bucket, b"trailer data", value, name)
    assert (reply.status, reply.code) == (400, "MalformedTrailerError")
    assert not object_exists(s3, bucket, "trailed")


# --- Expect: 100-continue -----------------------------------------------------------


def expect_continue_head(server, bucket: str, body: bytes, secret: str) -> bytes:
    headers = sign(
        "PUT",
        f"{server.endpoint}/{bucket}/expected",
        body=body,
        headers={"Content-Length": str(len(body))},
        secret_key=secret,
    )
    headers["Host"] = f"127.0.0.1:{server.s3_port}"
    headers["Expect"] = "100-continue"
    lines = [f"PUT /{bucket}/expected HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        data = sock.recv(65536)
        if not data:
            break
        received += data
    return received


def test_expect_continue_with_bad_signature_is_refused_before_the_body(server, s3, bucket):
    body = b"never sent" * 100
    with socket.create_connection(("127.0.0.1", server.s3_port), timeout=10) as sock:
        sock.sendall(expect_continue_head(server, bucket, body, secret="c" * 64))
        answer = read_until(sock, b"</Error>")
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert b"100 Continue" not in answer
    assert b"<Code>SignatureDoesNotMatch</Code>" in answer
    assert not object_exists(s3, bucket, "expected")


def test_expect_continue_with_good_signature_invites_the_body(server, s3, bucket):
    body = b"welcome" * 100
    with socket.create_connection(("127.0.0.1", server.s3_port), timeout=10) as sock:
        sock.sendall(expect_continue_head(server, bucket, body, secret=SECRET_KEY))
        assert read_until(sock, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    assert s3.get_object(Bucket=bucket, Key="expected")["Body"].read() == body


# --- per-bucket permissions of a second key ---------------------------------------


@pytest.fixture
def other_key(server) -> dict:
    return json.loads(server.cli("key", "create", "other", "--json").stdout)


def expect_denied(call, **params) -> None:
    with pytest.raises(ClientError) as caught:
        call(**params)
    assert client_error(caught.value) == (403, "AccessDenied")


def listed_buckets(client) -> set[str]:
    return {b["Name"] for b in client.list_buckets()["Buckets"]}


def test_second_key_needs_permission(server, bucket, other_key):
    s3 = server.client()
    s3.put_object(Bucket=bucket, Key="k", Body=b"first key's data")
    other = s3_client(
        server.endpoint, access_key=other_key["key_id"], secret_key=other_key["secret"]
    )

    expect_denied(other.get_object, Bucket=bucket, Key="k")
    expect_denied(other.put_object, Bucket=bucket, Key="k2", Body=b"x")
    expect_denied(other.list_objects_v2, Bucket=bucket)
    assert bucket not in listed_buckets(other)

    server.cli("bucket", "allow", bucket, "--read", "--key", other_key["key_id"])
    assert other.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first key's data"
    assert [o["Key"] for o in other.list_objects_v2(Bucket=bucket)["Contents"]] == ["k"]
    expect_denied(other.put_object, Bucket=bucket, Key="k2", Body=b"x")
    expect_denied(other.delete_object, Bucket=bucket, Key="k")
    assert listed_buckets(other) == {bucket}

    server.cli("bucket", "allow", bucket, "--write", "--key", other_key["key_id"])
    other.put_object(Bucket=bucket, Key="k2", Body=b"written by other")
    assert s3.get_object(Bucket=bucket, Key="k2")["Body"].read() == b"written by other"

    server.cli("bucket", "deny", bucket, "--read", "--write", "--key", other_key["key_id"])
    expect_denied(other.get_object, Bucket=bucket, Key="k")
    expect_denied(other.put_object, Bucket=bucket, Key="k3", Body=b"x")
    assert bucket not in listed_buckets(other)


def test_key_without_create_bucket_permission(server, other_key):
    other = s3_client(
        server.endpoint, access_key=other_key["key_id"], secret_key=other_key["secret"]
    )
    expect_denied(other.create_bucket, Bucket=f"not-allowed-{other_key['key_id'].lower()}")
    assert listed_buckets(other) == set()
