"""SigV2 verification against botocore's own SigV2 signers (HmacV1Auth, HmacV1QueryAuth)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import HmacV1Auth, HmacV1QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from granary.api.s3 import sigv2
from granary.api.s3.errors import S3Error
from granary.api.s3.router import parse_query
from granary.api.s3.sigv4 import AuthContext

KEY_ID = "GK0123456789abcdef01234567"
SECRET = "test/secret+key=0123456789abcdefghijklmn"
REGION = "us-east-1"
HOST = "127.0.0.1:3900"
CREDENTIALS = Credentials(KEY_ID, SECRET)


def secret_of(key_id: str) -> str | None:
    return SECRET if key_id == KEY_ID else None


def verify(
    method: str,
    url: str,
    headers: dict[str, str],
    now: datetime | None = None,
    *,
    bucket_prefix: str = "",
) -> AuthContext:
    """Run a request, as the HTTP layer hands it over, through sigv2.authenticate."""
    split = urlsplit(url)
    pairs = parse_query(split.query)
    params = dict(reversed(pairs))
    lower = {name.lower(): value for name, value in headers.items()}
    assert sigv2.is_sigv2(lower, params)
    return sigv2.authenticate(
        method,
        split.path,
        split.query,
        params,
        lower,
        secret_of,
        now or datetime.now(UTC),
        REGION,
        bucket_prefix=bucket_prefix,
    )


def header_signed(
    method: str, url: str, headers: dict[str, str], auth_path: str | None = None
) -> AWSRequest:
    request = AWSRequest(method=method, url=url, headers=dict(headers))
    request.auth_path = auth_path
    HmacV1Auth(CREDENTIALS).add_auth(request)
    return request


def presigned(method: str, url: str, headers: dict[str, str], expires: int = 3600) -> AWSRequest:
    request = AWSRequest(method=method, url=url, headers=dict(headers))
    HmacV1QueryAuth(CREDENTIALS, expires=expires).add_auth(request)
    return request


def raises(code: str, call, *args, **kwargs) -> S3Error:
    with pytest.raises(S3Error) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value
    return caught.value


# --- requests drawn by hypothesis ----------------------------------------------

key_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="?#"), min_size=1, max_size=40
)
header_value = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
amz_names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz-"), min_size=1, max_size=12)
subresources = st.dictionaries(
    st.sampled_from([*sorted(sigv2.SIGNED_SUBRESOURCES), "prefix", "marker", "max-keys"]),
    st.one_of(st.none(), header_value),
    max_size=4,
)
methods = st.sampled_from(["GET", "PUT", "HEAD", "DELETE", "POST"])


def build_url(bucket: str, key: str, query: dict[str, str | None]) -> str:
    path = f"/{bucket}/{quote(key, safe='/~')}"
    parts = [
        name if value is None else f"{name}={quote(value, safe='')}"
        for name, value in query.items()
    ]
    return f"http://{HOST}{path}" + ("?" + "&".join(parts) if parts else "")


def build_headers(content_type: str, md5: str, amz: dict[str, str]) -> dict[str, str]:
    headers = {f"x-amz-meta-{name}": value for name, value in amz.items()}
    if content_type:
        headers["Content-Type"] = content_type
    if md5:
        headers["Content-MD5"] = md5
    return headers


@settings(max_examples=300, deadline=None)
@given(
    methods,
    key_text,
    subresources,
    header_value,
    header_value,
    st.dictionaries(amz_names, header_value, max_size=4),
)
def test_header_signed_requests_verify(method, key, query, content_type, md5, amz):
    url = build_url("bucket", key, query)
    request = header_signed(method, url, build_headers(content_type, md5, amz))
    auth = verify(method, request.url, dict(request.headers.items()))
    assert auth.access_key_id == KEY_ID
    assert not auth.presigned


@settings(max_examples=300, deadline=None)
@given(
    methods,
    key_text,
    subresources,
    header_value,
    st.dictionaries(amz_names, header_value, max_size=3),
)
def test_presigned_urls_verify(method, key, query, content_type, amz):
    url = build_url("bucket", key, query)
    request = presigned(method, url, build_headers(content_type, "", amz))
    # The URL alone (headers moved into the query) and the URL plus the headers both verify.
    assert verify(method, request.url, {}).presigned
    assert verify(method, request.url, dict(request.headers.items())).presigned


@settings(max_examples=100, deadline=None)
@given(key_text, key_text)
def test_a_signature_is_bound_to_its_key(key, other):
    request = header_signed("GET", build_url("bucket", key, {}), {})
    if key == other:
        return
    raises(
        "SignatureDoesNotMatch",
        verify,
        "GET",
        build_url("bucket", other, {}),
        dict(request.headers.items()),
    )


def test_unsigned_query_parameters_may_change_signed_ones_may_not():
    request = header_signed("GET", f"http://{HOST}/bucket?versioning", {})
    headers = dict(request.headers.items())
    verify("GET", f"http://{HOST}/bucket?versioning&prefix=anything", headers)
    raises("SignatureDoesNotMatch", verify, "GET", f"http://{HOST}/bucket?acl", headers)


def test_path_style_bucket_request_signed_with_a_trailing_slash():
    request = header_signed("GET", f"http://{HOST}/bucket?prefix=a", {}, auth_path="/bucket/")
    verify("GET", request.url, dict(request.headers.items()))


def test_virtual_hosted_request_signs_the_bucket_in_the_resource():
    url = "http://bucket.s3.example.com/key.txt"
    request = header_signed("GET", url, {}, auth_path="/bucket/key.txt")
    headers = dict(request.headers.items())
    verify("GET", url, headers, bucket_prefix="/bucket")
    raises("SignatureDoesNotMatch", verify, "GET", url, headers)


def test_differently_escaped_path_verifies():
    request = header_signed("GET", f"http://{HOST}/bucket/a%2Bb%3Dc", {})
    headers = dict(request.headers.items())
    # Sent with these characters unescaped, signed with them escaped.
    verify("GET", f"http://{HOST}/bucket/a+b=c", headers)


def test_x_amz_date_replaces_date():
    now = datetime.now(UTC)
    amz_date = format_datetime(now, usegmt=True)
    text = sigv2.string_to_sign("GET", {"x-amz-date": amz_date}, "", "/bucket/key")
    headers = {"x-amz-date": amz_date, "authorization": f"AWS {KEY_ID}:{sigv2.sign(SECRET, text)}"}
    verify("GET", f"http://{HOST}/bucket/key", headers, now)
    # Without x-amz-date, the Date header is what counts.
    stale = {"x-amz-date": format_datetime(now - timedelta(hours=1), usegmt=True)}
    stale["authorization"] = headers["authorization"]
    raises("RequestTimeTooSkewed", verify, "GET", f"http://{HOST}/bucket/key", stale, now)


# --- failures, as AWS answers them ----------------------------------------------


def test_wrong_secret_is_signature_does_not_match():
    request = AWSRequest(method="GET", url=f"http://{HOST}/bucket/key", headers={})
    HmacV1Auth(Credentials(KEY_ID, "wrong")).add_auth(request)
    error = raises(
        "SignatureDoesNotMatch", verify, "GET", request.url, dict(request.headers.items())
    )
    assert error.status == 403
    assert error.extra["StringToSign"].endswith("/bucket/key")


def test_signature_of_undecodable_bytes_is_signature_does_not_match():
    request = header_signed("GET", f"http://{HOST}/bucket/key", {})
    headers = dict(request.headers.items())
    # Header bytes that are not UTF-8 reach the check as surrogate escapes.
    headers["Authorization"] = headers["Authorization"][:-2] + "\udcbd="
    raises("SignatureDoesNotMatch", verify, "GET", request.url, headers)


def test_tampered_header_is_signature_does_not_match():
    request = header_signed("PUT", f"http://{HOST}/bucket/key", {"x-amz-meta-a": "1"})
    headers = dict(request.headers.items())
    headers["x-amz-meta-a"] = "2"
    raises("SignatureDoesNotMatch", verify, "PUT", request.url, headers)


def test_skewed_date_is_refused():
    request = header_signed("GET", f"http://{HOST}/bucket/key", {})
    later = datetime.now(UTC) + timedelta(minutes=16)
    error = raises(
        "RequestTimeTooSkewed", verify, "GET", request.url, dict(request.headers.items()), later
    )
    assert error.status == 403
    verify(
        "GET", request.url, dict(request.headers.items()), datetime.now(UTC) + timedelta(minutes=14)
    )


def test_missing_or_unreadable_date_is_access_denied():
    headers = {"authorization": f"AWS {KEY_ID}:c2lnbmF0dXJl"}
    raises("AccessDenied", verify, "GET", f"http://{HOST}/bucket/key", headers)
    headers["date"] = "yesterday"
    raises("AccessDenied", verify, "GET", f"http://{HOST}/bucket/key", headers)
    headers["date"] = "Tue, 07 Jul 1950 21:53:04 GMT"  # before the epoch
    raises("AccessDenied", verify, "GET", f"http://{HOST}/bucket/key", headers)
    headers["x-amz-date"] = "Tue, 07 Jul 2010 21:53:04 GMT"
    raises("RequestTimeTooSkewed", verify, "GET", f"http://{HOST}/bucket/key", headers)


def test_expired_url_is_access_denied():
    request = presigned("GET", f"http://{HOST}/bucket/key", {}, expires=60)
    later = datetime.now(UTC) + timedelta(seconds=120)
    error = raises("AccessDenied", verify, "GET", request.url, {}, later)
    assert error.message == "Request has expired"
    assert error.status == 403


def test_tampered_presigned_url_is_refused():
    request = presigned("GET", f"http://{HOST}/bucket/key", {})
    raises("SignatureDoesNotMatch", verify, "GET", request.url.replace("/key", "/other"), {})
    expires = urlsplit(request.url).query
    longer = request.url.replace("Expires=", "Expires=9")
    assert longer != request.url, expires
    raises("SignatureDoesNotMatch", verify, "GET", longer, {})


@pytest.mark.parametrize(
    "expires",
    ["soon", "²", "-5", "1e9", "", "9" * 5000],
)
def test_unreadable_expires_is_access_denied(expires):
    url = f"http://{HOST}/bucket/key?AWSAccessKeyId={KEY_ID}&Signature=abc&Expires={expires}"
    raises("AccessDenied", verify, "GET", url, {})


def test_unknown_key_is_invalid_access_key_id():
    request = AWSRequest(method="GET", url=f"http://{HOST}/bucket/key", headers={})
    HmacV1Auth(Credentials("GKunknown", SECRET)).add_auth(request)
    raises("InvalidAccessKeyId", verify, "GET", request.url, dict(request.headers.items()))


@pytest.mark.parametrize("value", ["AWS nocolon", "AWS :sig", "AWS key:", "AWS "])
def test_malformed_authorization_is_invalid_argument(value):
    headers = {"authorization": value, "date": format_datetime(datetime.now(UTC), usegmt=True)}
    raises("InvalidArgument", verify, "GET", f"http://{HOST}/bucket/key", headers)


def test_header_and_query_signature_together_are_refused():
    request = header_signed("GET", f"http://{HOST}/bucket/key", {})
    url = f"http://{HOST}/bucket/key?AWSAccessKeyId={KEY_ID}&Signature=abc&Expires=1"
    raises("InvalidArgument", verify, "GET", url, dict(request.headers.items()))


def test_sigv4_requests_are_not_sigv2():
    assert not sigv2.is_sigv2({"authorization": "AWS4-HMAC-SHA256 Credential=x"}, {})
    assert not sigv2.is_sigv2({}, {"X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Signature": "x"})
    assert not sigv2.is_sigv2({}, {})
