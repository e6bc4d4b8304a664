"""SigV4 verification: AWS's published vectors, the S3 doc examples, real signers."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest
from awscrt import auth as crt_auth
from awscrt import http as crt_http
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from granary.api.s3.errors import S3Error
from granary.api.s3.sigv4 import (
    STREAMING_PAYLOAD,
    UNSIGNED_PAYLOAD,
    AuthContext,
    authenticate,
    canonical_query_string,
    canonical_request,
    canonical_uri,
    derive_signing_key,
    payload_is_signed,
    sign,
    string_to_sign,
)

VECTORS = Path(__file__).parent / "data" / "sigv4" / "aws4_testsuite"
VECTOR_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

DOC_KEY = "AKIAIOSFODNN7EXAMPLE"
DOC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_NOW = datetime(2013, 5, 24, tzinfo=UTC)
DOC_HOST = "examplebucket.s3.amazonaws.com"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

KEY_ID = "GKtestkey0123456789"
SECRET = "test/secret+key=0123456789abcdefghijklmn"
REGION = "garage"
ENDPOINT = "http://127.0.0.1:3900"


def doc_secret(key_id: str) -> str | None:
    return DOC_SECRET if key_id == DOC_KEY else None


def granary_secret(key_id: str) -> str | None:
    return SECRET if key_id == KEY_ID else None


def raises(code: str, call, *args, **kwargs) -> S3Error:
    with pytest.raises(S3Error) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value
    return caught.value


# --- AWS SigV4 test suite -------------------------------------------------------


def parse_vector_request(
    text: str,
) -> tuple[str, str, list[tuple[str, str]], dict[str, str], bytes]:
    head, _, body = text.partition("\n\n")
    request_line, *header_lines = head.split("\n")
    method, target = request_line.split(" ")[0], request_line.split(" ")[1]
    raw_path, _, raw_query = target.partition("?")
    query = [
        (unquote(name), unquote(value))
        for name, _, value in (part.partition("=") for part in raw_query.split("&") if part)
    ]
    headers: dict[str, str] = {}
    last = ""
    for line in header_lines:
        if line[:1] in (" ", "\t"):
            headers[last] += " " + line.strip()
            continue
        name, _, value = line.partition(":")
        last = name.lower()
        headers[last] = f"{headers[last]},{value}" if last in headers else value
    return method, raw_path, query, headers, body.encode()


def vector_names() -> list[str]:
    return sorted(path.name for path in VECTORS.iterdir() if path.is_dir())


def test_vector_set_is_present():
    assert len(vector_names()) >= 20


@pytest.mark.parametrize("name", vector_names())
def test_aws_sigv4_test_suite(name: str):
    folder = VECTORS / name
    method, raw_path, query, headers, body = parse_vector_request(
        (folder / f"{name}.req").read_text()
    )
    authz = (folder / f"{name}.authz").read_text()
    fields = dict(part.strip().split("=", 1) for part in authz.split(" ", 1)[1].split(","))
    signed_headers = fields["SignedHeaders"].split(";")
    _, date, region, service, _ = fields["Credential"].split("/")

    canonical = canonical_request(
        method,
        canonical_uri(raw_path),
        canonical_query_string(query),
        headers,
        signed_headers,
        hashlib.sha256(body).hexdigest(),
    )
    assert canonical == (folder / f"{name}.creq").read_text()

    scope = f"{date}/{region}/{service}/aws4_request"
    text = string_to_sign(headers["x-amz-date"], scope, canonical)
    assert text == (folder / f"{name}.sts").read_text()

    key = derive_signing_key(VECTOR_SECRET, date, region, service)
    assert sign(key, text) == fields["Signature"]


def test_canonical_uri_keeps_s3_paths_unnormalised_and_single_encoded():
    assert canonical_uri("/bucket/a//b/./c/../d") == "/bucket/a//b/./c/../d"
    assert canonical_uri("/bucket/a b+c=d") == "/bucket/a%20b%2Bc%3Dd"
    assert canonical_uri("/bucket/a%20b%2bc") == "/bucket/a%20b%2Bc"
    assert canonical_uri("/bucket/%E2%82%AC~x") == "/bucket/%E2%82%AC~x"
    assert canonical_uri("/bucket/€") == "/bucket/%E2%82%AC"
    assert canonical_uri("/bucket/a%2Fb") == "/bucket/a/b"


def test_canonical_query_encodes_strictly_and_sorts():
    query = [("prefix", "a/b c+"), ("uploads", ""), ("delimiter", "/"), ("a", "2"), ("a", "1")]
    assert canonical_query_string(query) == ("a=1&a=2&delimiter=%2F&prefix=a%2Fb%20c%2B&uploads=")


# --- S3 documentation examples --------------------------------------------------


def doc_authorization(signed_headers: str, signature: str) -> str:
    return (
        f"AWS4-HMAC-SHA256 Credential={DOC_KEY}/20130524/us-east-1/s3/aws4_request,"
        f"SignedHeaders={signed_headers},Signature={signature}"
    )


def doc_get_object_headers() -> dict[str, str]:
    return {
        "host": DOC_HOST,
        "range": "bytes=0-9",
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": "20130524T000000Z",
        "authorization": doc_authorization(
            "host;range;x-amz-content-sha256;x-amz-date",
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        ),
    }


def test_doc_get_object_with_range():
    ctx = authenticate(
        "GET", "/test.txt", [], doc_get_object_headers(), doc_secret, DOC_NOW, "us-east-1"
    )
    assert ctx == AuthContext(
        access_key_id=DOC_KEY,
        region="us-east-1",
        service="s3",
        date="20130524",
        timestamp="20130524T000000Z",
        scope="20130524/us-east-1/s3/aws4_request",
        signing_key=derive_signing_key(DOC_SECRET, "20130524", "us-east-1", "s3"),
        signature="f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        content_sha256=EMPTY_SHA256,
        presigned=False,
    )
    assert payload_is_signed(ctx)
    assert "signing_key" not in repr(ctx)


def test_doc_get_object_rejects_a_changed_range():
    headers = doc_get_object_headers() | {"range": "bytes=0-10"}
    error = raises(
        "SignatureDoesNotMatch",
        authenticate,
        "GET",
        "/test.txt",
        [],
        headers,
        doc_secret,
        DOC_NOW,
        "us-east-1",
    )
    assert "range:bytes=0-10\n" in error.extra["CanonicalRequest"]
    assert error.extra["SignatureProvided"].startswith("f0e8bdb8")


def test_doc_put_object_with_dollar_in_key_and_date_header():
    headers = {
        "host": DOC_HOST,
        "date": "Fri, 24 May 2013 00:00:00 GMT",
        "x-amz-date": "20130524T000000Z",
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "x-amz-content-sha256": hashlib.sha256(b"Welcome to Amazon S3.").hexdigest(),
        "authorization": doc_authorization(
            "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
        ),
    }
    ctx = authenticate("PUT", "/test$file.text", [], headers, doc_secret, DOC_NOW, "us-east-1")
    assert ctx is not None and ctx.content_sha256 == headers["x-amz-content-sha256"]


@pytest.mark.parametrize(
    ("query", "signature"),
    [
        ([("lifecycle", "")], "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
        (
            [("max-keys", "2"), ("prefix", "J")],
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        ),
    ],
)
def test_doc_bucket_requests_with_query(query, signature):
    headers = {
        "host": DOC_HOST,
        "x-amz-date": "20130524T000000Z",
        "x-amz-content-sha256": EMPTY_SHA256,
        "authorization": doc_authorization("host;x-amz-content-sha256;x-amz-date", signature),
    }
    assert authenticate("GET", "/", query, headers, doc_secret, DOC_NOW, "us-east-1")


DOC_PRESIGNED_QUERY = [
    ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
    ("X-Amz-Credential", f"{DOC_KEY}/20130524/us-east-1/s3/aws4_request"),
    ("X-Amz-Date", "20130524T000000Z"),
    ("X-Amz-Expires", "86400"),
    ("X-Amz-SignedHeaders", "host"),
    ("X-Amz-Signature", "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"),
]


def with_param(name: str, value: str) -> list[tuple[str, str]]:
    return [(n, value if n == name else v) for n, v in DOC_PRESIGNED_QUERY]


def test_doc_presigned_url():
    ctx = authenticate(
        "GET",
        "/test.txt",
        DOC_PRESIGNED_QUERY,
        {"host": DOC_HOST},
        doc_secret,
        DOC_NOW + timedelta(hours=23),
        "us-east-1",
    )
    assert ctx is not None
    assert ctx.presigned and ctx.content_sha256 == UNSIGNED_PAYLOAD
    assert not payload_is_signed(ctx)


def test_doc_presigned_url_expires():
    error = raises(
        "AccessDenied",
        authenticate,
        "GET",
        "/test.txt",
        DOC_PRESIGNED_QUERY,
        {"host": DOC_HOST},
        doc_secret,
        DOC_NOW + timedelta(seconds=86401),
        "us-east-1",
    )
    assert error.message == "Request has expired"
    assert error.extra["X-Amz-Expires"] == "86400"
    assert error.extra["Expires"] == "2013-05-25T00:00:00Z"


def test_doc_presigned_url_not_yet_valid():
    error = raises(
        "AccessDenied",
        authenticate,
        "GET",
        "/test.txt",
        DOC_PRESIGNED_QUERY,
        {"host": DOC_HOST},
        doc_secret,
        DOC_NOW - timedelta(minutes=16),
        "us-east-1",
    )
    assert error.message == "Request is not yet valid"


def test_presigned_within_clock_skew_of_the_future_is_accepted():
    assert authenticate(
        "GET",
        "/test.txt",
        DOC_PRESIGNED_QUERY,
        {"host": DOC_HOST},
        doc_secret,
        DOC_NOW - timedelta(minutes=14),
        "us-east-1",
    )


def expires_error(expires: str):
    """The error of the documentation's presigned GET with `X-Amz-Expires` set to `expires`."""
    return raises(
        "AuthorizationQueryParametersError",
        authenticate,
        "GET",
        "/test.txt",
        with_param("X-Amz-Expires", expires),
        {"host": DOC_HOST},
        doc_secret,
        DOC_NOW,
        "us-east-1",
    )


@pytest.mark.parametrize("expires", ["abc", "1e3", "", "\u00b2", "-", "9" * 5000, "-" + "9" * 5000])
def test_presigned_expires_must_be_a_number(expires):
    error = expires_error(expires)
    assert (error.status, error.message) == (400, "X-Amz-Expires should be a number")


@pytest.mark.parametrize("expires", ["604801", "99999999999"])
def test_presigned_expires_beyond_a_week_is_403(expires):
    error = expires_error(expires)
    assert error.status == 403
    assert error.message == ("X-Amz-Expires must be less than a week (in seconds) that is; 604800")


def test_presigned_negative_expiry_is_an_expired_request():
    raises(
        "AccessDenied",
        authenticate,
        "GET",
        "/test.txt",
        with_param("X-Amz-Expires", "-1"),
        {"host": DOC_HOST},
        doc_secret,
        DOC_NOW,
        "us-east-1",
    )


def test_presigned_missing_parameter():
    query = [(n, v) for n, v in DOC_PRESIGNED_QUERY if n != "X-Amz-SignedHeaders"]
    raises(
        "AuthorizationQueryParametersError",
        authenticate,
        "GET",
        "/test.txt",
        query,
        {"host": DOC_HOST},
        doc_secret,
        DOC_NOW,
        "us-east-1",
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Amz-Credential", "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3"),
        ("X-Amz-Date", "2013-05-24T00:00:00Z"),
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA1"),
        ("X-Amz-SignedHeaders", "range"),
    ],
)
def test_presigned_malformed_parameters(name, value):
    raises(
        "AuthorizationQueryParametersError",
        authenticate,
        "GET",
        "/test.txt",
        with_param(name, value),
        {"host": DOC_HOST},
        doc_secret,
        DOC_NOW,
        "us-east-1",
    )


def test_presigned_wrong_region_names_the_right_one():
    error = raises(
        "AuthorizationQueryParametersError",
        authenticate,
        "GET",
        "/test.txt",
        DOC_PRESIGNED_QUERY,
        {"host": DOC_HOST},
        doc_secret,
        DOC_NOW,
        "eu-west-1",
    )
    assert error.extra == {"Region": "eu-west-1"}


def test_presigned_tampered_path_and_unsigned_amz_header():
    raises(
        "SignatureDoesNotMatch",
        authenticate,
        "GET",
        "/test.txt2",
        DOC_PRESIGNED_QUERY,
        {"host": DOC_HOST},
        doc_secret,
        DOC_NOW,
        "us-east-1",
    )
    error = raises(
        "AccessDenied",
        authenticate,
        "GET",
        "/test.txt",
        DOC_PRESIGNED_QUERY,
        {"host": DOC_HOST, "x-amz-copy-source": "/other/secret"},
        doc_secret,
        DOC_NOW,
        "us-east-1",
    )
    assert error.extra["HeadersNotSigned"] == "x-amz-copy-source"


# --- request-level errors ----------------------------------------------------------


def call_doc_get(headers: dict[str, str], now: datetime = DOC_NOW, region: str = "us-east-1"):
    return authenticate("GET", "/test.txt", [], headers, doc_secret, now, region)


def test_anonymous_request_returns_none():
    assert (
        authenticate("GET", "/b/k", [("list-type", "2")], {"host": "h"}, doc_secret, DOC_NOW, "x")
        is None
    )


def test_wrong_region_is_named():
    error = raises(
        "AuthorizationHeaderMalformed", call_doc_get, doc_get_object_headers(), DOC_NOW, "eu-west-1"
    )
    assert error.message == (
        "The authorization header is malformed; the region 'us-east-1' is wrong; "
        "expecting 'eu-west-1'"
    )
    assert error.extra == {"Region": "eu-west-1"}


def test_request_time_too_skewed():
    error = raises(
        "RequestTimeTooSkewed",
        call_doc_get,
        doc_get_object_headers(),
        DOC_NOW + timedelta(minutes=16),
    )
    assert error.extra["RequestTime"] == "20130524T000000Z"
    assert error.extra["ServerTime"] == "2013-05-24T00:16:00Z"
    assert call_doc_get(doc_get_object_headers(), DOC_NOW - timedelta(minutes=14))


def test_unknown_access_key():
    headers = doc_get_object_headers()
    headers["authorization"] = headers["authorization"].replace(DOC_KEY, "AKIDUNKNOWN")
    raises("InvalidAccessKeyId", call_doc_get, headers)


def test_missing_content_sha256():
    headers = doc_get_object_headers()
    del headers["x-amz-content-sha256"]
    error = raises("InvalidRequest", call_doc_get, headers)
    assert error.message == "Missing required header for this request: x-amz-content-sha256"


def test_invalid_content_sha256():
    headers = doc_get_object_headers() | {"x-amz-content-sha256": "nope"}
    raises("InvalidArgument", call_doc_get, headers)


@pytest.mark.parametrize(
    "authorization",
    [
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request",
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3, "
        "SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/2013-05-24/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=range;x-amz-date, Signature=00",
        "AWS4-HMAC-SHA256 garbage",
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130523/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/ec2/aws4_request, "
        "SignedHeaders=host, Signature=00",
    ],
)
def test_malformed_authorization_header(authorization):
    raises(
        "AuthorizationHeaderMalformed",
        call_doc_get,
        doc_get_object_headers() | {"authorization": authorization},
    )


def test_other_authorization_schemes_are_invalid():
    raises("InvalidArgument", call_doc_get, {"host": DOC_HOST, "authorization": "Bearer abc"})


def test_header_and_query_auth_together_are_refused():
    raises(
        "InvalidArgument",
        authenticate,
        "GET",
        "/test.txt",
        DOC_PRESIGNED_QUERY,
        doc_get_object_headers(),
        doc_secret,
        DOC_NOW,
        "us-east-1",
    )


def test_missing_request_date():
    headers = doc_get_object_headers()
    del headers["x-amz-date"]
    raises("AccessDenied", call_doc_get, headers)


def test_date_header_used_when_x_amz_date_is_absent():
    headers = {
        "host": DOC_HOST,
        "date": "Fri, 24 May 2013 00:00:00 GMT",
        "x-amz-content-sha256": EMPTY_SHA256,
    }
    scope = "20130524/us-east-1/s3/aws4_request"
    signed = ["date", "host", "x-amz-content-sha256"]
    canonical = canonical_request("GET", "/test.txt", "", headers, signed, EMPTY_SHA256)
    key = derive_signing_key(DOC_SECRET, "20130524", "us-east-1", "s3")
    signature = sign(key, string_to_sign("20130524T000000Z", scope, canonical))
    headers["authorization"] = doc_authorization(";".join(signed), signature)
    ctx = call_doc_get(headers)
    assert ctx is not None and ctx.timestamp == "20130524T000000Z"


def test_signing_keys_are_cached():
    derive_signing_key("cache-secret", "20240101", "r", "s3")
    before = derive_signing_key.cache_info().hits
    derive_signing_key("cache-secret", "20240101", "r", "s3")
    assert derive_signing_key.cache_info().hits == before + 1
    assert derive_signing_key.cache_info().maxsize is not None


# --- round trips with botocore's and awscrt's signers -------------------------------


def object_url(key: str, query: str = "") -> str:
    url = f"{ENDPOINT}/bucket/{quote(key, safe='/~')}"
    return f"{url}?{query}" if query else url


def request_args(request: AWSRequest) -> tuple[str, str, list[tuple[str, str]], dict[str, str]]:
    """What the HTTP layer would hand to `authenticate` for this botocore request."""
    split = urlsplit(request.url)
    query = [
        (unquote(name), unquote(value))
        for name, _, value in (part.partition("=") for part in split.query.split("&") if part)
    ]
    headers: dict[str, str] = {"host": split.netloc}
    for name, value in request.headers.items():
        text = value.decode() if isinstance(value, bytes) else value
        lower = name.lower()
        headers[lower] = f"{headers[lower]},{text}" if lower in headers else text
    return request.method, split.path, query, headers


def botocore_signed(
    method: str, url: str, headers: dict[str, str] | None = None, data: bytes = b""
) -> AWSRequest:
    request = AWSRequest(method=method, url=url, headers=headers or {}, data=data)
    S3SigV4Auth(Credentials(KEY_ID, SECRET), "s3", REGION).add_auth(request)
    return request


def botocore_presigned(method: str, url: str, expires: int = 3600) -> AWSRequest:
    request = AWSRequest(method=method, url=url)
    S3SigV4QueryAuth(Credentials(KEY_ID, SECRET), "s3", REGION, expires=expires).add_auth(request)
    return request


def verify(args, now: datetime | None = None, lookup=granary_secret) -> AuthContext | None:
    method, path, query, headers = args
    return authenticate(method, path, query, headers, lookup, now or datetime.now(UTC), REGION)


AWKWARD_KEYS = [
    "plain.txt",
    "with space and+plus",
    "ünïcødé/日本語/€",
    "a&b=c;d,e",
    "percent%20literal%",
    "question?hash#mark",
    "double//slash/./dot/../dotdot",
    "~tilde!*'()$@:[]",
    "/leading-slash",
]


@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_botocore_header_signed_put_round_trip(key):
    body = b"hello granary"
    request = botocore_signed(
        "PUT",
        object_url(key),
        {"x-amz-meta-owner": "  Zoë   Smith ", "Content-Type": "text/plain"},
        body,
    )
    ctx = verify(request_args(request))
    assert ctx is not None
    assert ctx.access_key_id == KEY_ID and ctx.region == REGION and not ctx.presigned
    assert ctx.content_sha256 == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_botocore_presigned_get_round_trip(key):
    request = botocore_presigned(
        "GET", object_url(key, "versionId=v%2F1&response-content-type=a%2Bb")
    )
    ctx = verify(request_args(request))
    assert ctx is not None and ctx.presigned and ctx.content_sha256 == UNSIGNED_PAYLOAD


def test_botocore_https_uses_unsigned_payload():
    request = AWSRequest(
        method="PUT",
        url="https://s3.local/bucket/k",
        headers={"Content-MD5": "LZcpnxzvzKT09hV6IT3Ydg=="},
        data=b"x",
    )
    request.context["has_streaming_input"] = True
    S3SigV4Auth(Credentials(KEY_ID, SECRET), "s3", REGION).add_auth(request)
    ctx = verify(request_args(request))
    assert ctx is not None and ctx.content_sha256 == UNSIGNED_PAYLOAD


def test_botocore_list_with_flag_and_encoded_query():
    request = botocore_signed(
        "GET", f"{ENDPOINT}/bucket?uploads&prefix=a%2Fb%20c&delimiter=%2F&encoding-type=url"
    )
    method, path, query, headers = request_args(request)
    assert ("uploads", "") in query
    assert verify((method, path, query, headers))


def test_path_encoded_differently_from_the_signature_still_verifies():
    request = botocore_signed("GET", object_url("a+b=c@d:e"))
    method, path, query, headers = request_args(request)
    assert path == "/bucket/a%2Bb%3Dc%40d%3Ae"
    assert verify((method, "/bucket/a+b=c@d:e", query, headers))


def test_client_that_signs_its_raw_path_verifies():
    request = botocore_signed("GET", f"{ENDPOINT}/bucket/a+b=c@d:e")
    assert verify(request_args(request))


def tampered(args, *, path=None, query=None, headers=None):
    method, old_path, old_query, old_headers = args
    return (
        method,
        old_path if path is None else path,
        old_query if query is None else query,
        old_headers | (headers or {}),
    )


def test_botocore_tampered_requests_are_rejected():
    request = botocore_signed(
        "PUT", object_url("dir/key", "partNumber=1&uploadId=abc"), {"x-amz-meta-a": "1"}, b"data"
    )
    args = request_args(request)
    assert verify(args)
    raises("SignatureDoesNotMatch", verify, tampered(args, headers={"x-amz-meta-a": "2"}))
    raises("SignatureDoesNotMatch", verify, tampered(args, path="/bucket/dir/key2"))
    raises("SignatureDoesNotMatch", verify, tampered(args, path="/bucket/dir//key"))
    raises(
        "SignatureDoesNotMatch",
        verify,
        tampered(args, query=[("partNumber", "2"), ("uploadId", "abc")]),
    )
    raises("SignatureDoesNotMatch", verify, tampered(args, headers={"host": "evil:3900"}))
    raises(
        "SignatureDoesNotMatch",
        verify,
        tampered(args, headers={"x-amz-content-sha256": hashlib.sha256(b"evil").hexdigest()}),
    )
    raises("SignatureDoesNotMatch", verify, args, lookup=lambda _: "wrong secret")
    raises("InvalidAccessKeyId", verify, args, lookup=lambda _: None)
    raises("RequestTimeTooSkewed", verify, args, now=datetime.now(UTC) + timedelta(minutes=20))
    raises("RequestTimeTooSkewed", verify, args, now=datetime.now(UTC) - timedelta(minutes=20))
    error = raises("AccessDenied", verify, tampered(args, headers={"x-amz-acl": "public-read"}))
    assert error.extra["HeadersNotSigned"] == "x-amz-acl"


def test_botocore_presigned_tampered_and_expired():
    request = botocore_presigned("PUT", object_url("k", "uploadId=1&partNumber=3"), expires=60)
    args = request_args(request)
    assert verify(args)
    raises("SignatureDoesNotMatch", verify, tampered(args, path="/bucket/k2"))
    changed = [(n, "4" if n == "partNumber" else v) for n, v in args[2]]
    raises("SignatureDoesNotMatch", verify, tampered(args, query=changed))
    raises("AccessDenied", verify, args, now=datetime.now(UTC) + timedelta(seconds=120))
    raises("SignatureDoesNotMatch", verify, args, lookup=lambda _: "wrong secret")


def crt_signed(
    method: str, path: str, headers: list[tuple[str, str]], body_value: str
) -> dict[str, str]:
    """Sign with the AWS Common Runtime (the signer behind awscli v2 and the CRT clients)."""
    request = crt_http.HttpRequest(method, path, crt_http.HttpHeaders(headers))
    config = crt_auth.AwsSigningConfig(
        algorithm=crt_auth.AwsSigningAlgorithm.V4,
        signature_type=crt_auth.AwsSignatureType.HTTP_REQUEST_HEADERS,
        credentials_provider=crt_auth.AwsCredentialsProvider.new_static(KEY_ID, SECRET),
        region=REGION,
        service="s3",
        signed_body_value=body_value,
        signed_body_header_type=crt_auth.AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256,
        use_double_uri_encode=False,
        should_normalize_uri_path=False,
    )
    crt_auth.aws_sign_request(request, config).result(timeout=10)
    return {name.lower(): value for name, value in request.headers}


@pytest.mark.parametrize("body_value", [UNSIGNED_PAYLOAD, STREAMING_PAYLOAD, EMPTY_SHA256])
def test_awscrt_signed_round_trip(body_value):
    path = "/bucket/" + quote("crt key+€/x", safe="/~")
    headers = crt_signed(
        "PUT", path + "?partNumber=1&uploadId=u%2Fv", [("Host", "127.0.0.1:3900")], body_value
    )
    query = [("partNumber", "1"), ("uploadId", "u/v")]
    ctx = verify(("PUT", path, query, headers))
    assert ctx is not None and ctx.content_sha256 == body_value
    raises("SignatureDoesNotMatch", verify, ("PUT", path + "x", query, headers))
