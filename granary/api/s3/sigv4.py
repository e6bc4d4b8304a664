"""AWS Signature Version 4 verification for S3 requests, sans-IO.

`authenticate` checks a request signed either with an `Authorization` header or
with presigned query parameters and returns what the rest of the request needs
(notably the signing key and seed signature for aws-chunked bodies).

The canonical URI is rebuilt from the raw path by decoding it once and
re-encoding every byte with AWS's strict UriEncode, so clients that escape a
few characters differently (`+`, `=`, `@`, `:`...) still verify. S3 never
normalises the path (`//` and `.` segments are kept). When that rebuilt form
does not verify, the path exactly as sent is tried as well.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import lru_cache
from urllib.parse import quote, unquote_to_bytes

from granary.api.s3.errors import S3Error
from granary.api.s3.numbers import parse_decimal

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_PAYLOAD_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_PAYLOAD_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_VALUES = frozenset(
    {STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER, STREAMING_UNSIGNED_PAYLOAD_TRAILER}
)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

MAX_CLOCK_SKEW = timedelta(minutes=15)
MAX_PRESIGNED_EXPIRES = 7 * 24 * 3600

AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
SERVER_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

# x-amz-* headers a client may leave out of SignedHeaders: both are bound by
# the signature anyway (payload hash line and string-to-sign timestamp).
UNSIGNED_AMZ_HEADERS_ALLOWED = frozenset({"x-amz-content-sha256", "x-amz-date"})

PRESIGNED_PARAMETERS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_SCOPE_DATE = re.compile(r"[0-9]{8}")
_UNSUPPORTED_MECHANISM = (
    "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."
)
_MALFORMED_CREDENTIAL = (
    "The authorization header is malformed; the Credential is mal-formed; "
    'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
)
_INVALID_DATE = "AWS authentication requires a valid Date or x-amz-date header"


@dataclass(frozen=True)
class AuthContext:
    """The outcome of a verified SigV4 request."""

    access_key_id: str
    region: str
    service: str
    date: str
    timestamp: str
    scope: str
    signing_key: bytes = field(repr=False)
    signature: str
    content_sha256: str
    presigned: bool


def payload_is_signed(ctx: AuthContext) -> bool:
    """True when the body is covered by the signature (hash or signed chunks)."""
    return ctx.content_sha256 in (STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER) or bool(
        _SHA256_HEX.fullmatch(ctx.content_sha256)
    )


# --- canonical request pieces -------------------------------------------------


def uri_encode(value: str | bytes, *, keep_slash: bool) -> str:
    """AWS UriEncode: keep A-Za-z0-9-._~ (and `/` if asked), %XX the rest."""
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    return quote(value, safe="/" if keep_slash else "")


def canonical_uri(raw_path: str) -> str:
    """The S3 canonical URI of a raw request path: decoded once, re-encoded, not normalised."""
    decoded = unquote_to_bytes(raw_path.encode("utf-8", "surrogateescape"))
    return uri_encode(decoded, keep_slash=True) or "/"


def canonical_query_string(query: Iterable[tuple[str, str]]) -> str:
    """Encode decoded (name, value) pairs strictly and sort them by name, then value."""
    pairs = sorted(
        (uri_encode(name, keep_slash=False), uri_encode(value, keep_slash=False))
        for name, value in query
    )
    return "&".join(f"{name}={value}" for name, value in pairs)


def canonical_header_value(value: str) -> str:
    """Trim a header value and collapse inner runs of whitespace into one space."""
    return " ".join(value.split())


def canonical_headers(headers: Mapping[str, str], signed_headers: Sequence[str]) -> str:
    """`name:value\\n` for each signed header; a signed header that is absent counts as empty."""
    return "".join(
        f"{name}:{canonical_header_value(headers.get(name, ''))}\n" for name in signed_headers
    )


def canonical_request(
    method: str,
    uri: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    """Assemble the canonical request from already canonical URI and query strings."""
    return "\n".join(
        (
            method,
            uri,
            query,
            canonical_headers(headers, signed_headers),
            ";".join(signed_headers),
            payload_hash,
        )
    )


def string_to_sign(timestamp: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"


@lru_cache(maxsize=1024)
def derive_signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The HMAC chain kSecret -> kDate -> kRegion -> kService -> kSigning, cached."""
    key = ("AWS4" + secret).encode("utf-8")
    for part in (date, region, service, TERMINATOR):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def sign(signing_key: bytes, text: str) -> str:
    return hmac.new(signing_key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def signatures_equal(expected: str, provided: str) -> bool:
    """Constant-time comparison that tolerates non-ASCII input."""
    return hmac.compare_digest(
        expected.encode("ascii"), provided.encode("utf-8", "surrogateescape")
    )


# --- request parsing ----------------------------------------------------------


@dataclass(frozen=True)
class _Credential:
    access_key_id: str
    date: str
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{TERMINATOR}"


@dataclass(frozen=True)
class _SignedRequest:
    """What either auth form provides once parsed."""

    credential: _Credential
    signed_headers: tuple[str, ...]
    signature: str
    timestamp: str
    moment: datetime
    presigned: bool


def _parse_credential(text: str, error: Callable[[str], S3Error]) -> _Credential:
    parts = text.rsplit("/", 4)
    if len(parts) != 5 or not parts[0] or parts[4] != TERMINATOR:
        raise error(_MALFORMED_CREDENTIAL)
    access_key_id, date, region, service, _ = parts
    if not _SCOPE_DATE.fullmatch(date):
        raise error(_MALFORMED_CREDENTIAL)
    return _Credential(access_key_id, date, region, service)


def _parse_signed_headers(text: str, error: Callable[[str], S3Error]) -> tuple[str, ...]:
    names = tuple(name.strip().lower() for name in text.split(";"))
    if not text or any(not name for name in names):
        raise error("SignedHeaders is malformed")
    if "host" not in names:
        raise error("The host header must be signed")
    return names


def _header_error(message: str) -> S3Error:
    return S3Error("AuthorizationHeaderMalformed", message)


def _query_error(message: str) -> S3Error:
    return S3Error("AuthorizationQueryParametersError", message)


def _parse_amz_date(text: str) -> datetime | None:
    """Parse YYYYMMDDTHHMMSSZ (strptime costs several times more on every request)."""
    if len(text) != 16 or text[8] != "T" or text[15] != "Z":
        return None
    digits = text[:8] + text[9:15]
    if not digits.isascii() or not digits.isdigit():
        return None
    try:
        return datetime(
            int(text[0:4]),
            int(text[4:6]),
            int(text[6:8]),
            int(text[9:11]),
            int(text[11:13]),
            int(text[13:15]),
            tzinfo=UTC,
        )
    except ValueError:
        return None


def _request_time(headers: Mapping[str, str]) -> tuple[str, datetime]:
    """The signing timestamp of a header-signed request: x-amz-date, else Date."""
    amz_date = headers.get("x-amz-date")
    if amz_date is not None:
        moment = _parse_amz_date(amz_date.strip())
        if moment is None:
            raise S3Error("AccessDenied", _INVALID_DATE)
        return amz_date.strip(), moment
    date = headers.get("date")
    if date is None:
        raise S3Error("AccessDenied", _INVALID_DATE)
    try:
        moment = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        raise S3Error("AccessDenied", _INVALID_DATE) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime(AMZ_DATE_FORMAT), moment


def _parse_authorization(value: str, headers: Mapping[str, str]) -> _SignedRequest:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        if algorithm == "AWS4-ECDSA-P256-SHA256":
            raise S3Error("InvalidRequest", _UNSUPPORTED_MECHANISM)
        raise S3Error(
            "InvalidArgument",
            "Unsupported Authorization Type",
            ArgumentName="Authorization",
            ArgumentValue=value,
        )
    fields: dict[str, str] = {}
    for component in rest.split(","):
        name, sep, field = component.strip().partition("=")
        if not sep:
            raise _header_error(
                f"The authorization header is malformed; the authorization component "
                f'"{component.strip()}" is malformed.'
            )
        fields.setdefault(name.strip(), field.strip())
    missing = [name for name in ("Credential", "SignedHeaders", "Signature") if name not in fields]
    if missing:
        raise _header_error(
            f"The authorization header is malformed; it is missing {', '.join(missing)}."
        )
    credential = _parse_credential(fields["Credential"], _header_error)
    signed_headers = _parse_signed_headers(fields["SignedHeaders"], _header_error)
    timestamp, moment = _request_time(headers)
    if timestamp[:8] != credential.date:
        raise _header_error(
            "The authorization header is malformed; Invalid credential date. "
            "Date is not the same as X-Amz-Date."
        )
    return _SignedRequest(
        credential, signed_headers, fields["Signature"], timestamp, moment, presigned=False
    )


def _parse_presigned(params: Mapping[str, str]) -> tuple[_SignedRequest, int]:
    if any(name not in params for name in PRESIGNED_PARAMETERS):
        raise _query_error(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, "
            "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
            "and X-Amz-Expires parameters."
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise _query_error('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    credential = _parse_credential(
        params["X-Amz-Credential"],
        lambda _: _query_error("Error parsing the X-Amz-Credential parameter."),
    )
    timestamp = params["X-Amz-Date"]
    moment = _parse_amz_date(timestamp)
    if moment is None:
        raise _query_error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    if timestamp[:8] != credential.date:
        raise _query_error(
            "Error parsing the X-Amz-Credential parameter; the date is not the same as X-Amz-Date."
        )
    expires_text = params["X-Amz-Expires"]
    negative = expires_text.startswith("-")
    expires = parse_decimal(expires_text.removeprefix("-"))
    if expires is None:
        raise _query_error("X-Amz-Expires should be a number")
    if negative and expires:
        # A URL that expired before it was made: answered as any expired URL.
        raise S3Error("AccessDenied", "Request has expired")
    if expires > MAX_PRESIGNED_EXPIRES:
        raise S3Error(
            "AuthorizationQueryParametersError",
            f"X-Amz-Expires must be less than a week (in seconds) that is; {MAX_PRESIGNED_EXPIRES}",
            status=403,
        )
    signed_headers = _parse_signed_headers(params["X-Amz-SignedHeaders"], _query_error)
    request = _SignedRequest(
        credential, signed_headers, params["X-Amz-Signature"], timestamp, moment, presigned=True
    )
    return request, expires


def several_mechanisms(authorization: str) -> S3Error:
    """The error for a request with both an Authorization header and query authentication."""
    return S3Error(
        "InvalidArgument",
        "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
        "Signature query string parameter or the Authorization header should be specified",
        ArgumentName="Authorization",
        ArgumentValue=authorization,
    )


def _check_scope(credential: _Credential, region: str, service: str, presigned: bool) -> None:
    if credential.region != region:
        if presigned:
            raise S3Error(
                "AuthorizationQueryParametersError",
                f"Error parsing the X-Amz-Credential parameter; the region "
                f"'{credential.region}' is wrong; expecting '{region}'",
                Region=region,
            )
        raise S3Error(
            "AuthorizationHeaderMalformed",
            f"The authorization header is malformed; the region '{credential.region}' "
            f"is wrong; expecting '{region}'",
            Region=region,
        )
    if credential.service != service:
        message = f'incorrect service "{credential.service}". This endpoint belongs to "{service}".'
        if presigned:
            raise _query_error(f"Error parsing the X-Amz-Credential parameter; {message}")
        raise _header_error(f"The authorization header is malformed; {message}")


def _check_header_time(request: _SignedRequest, now: datetime) -> None:
    if abs(request.moment - now) > MAX_CLOCK_SKEW:
        raise S3Error(
            "RequestTimeTooSkewed",
            RequestTime=request.timestamp,
            ServerTime=now.strftime(SERVER_TIME_FORMAT),
            MaxAllowedSkewMilliseconds=str(int(MAX_CLOCK_SKEW.total_seconds() * 1000)),
        )


def _check_presigned_time(request: _SignedRequest, expires: int, now: datetime) -> None:
    expiry = request.moment + timedelta(seconds=expires)
    if request.moment - now > MAX_CLOCK_SKEW:
        raise _access_denied(
            "Request is not yet valid",
            {
                "X-Amz-Date": request.timestamp,
                "Expires": expiry.strftime(SERVER_TIME_FORMAT),
                "ServerTime": now.strftime(SERVER_TIME_FORMAT),
            },
        )
    if now > expiry:
        raise _access_denied(
            "Request has expired",
            {
                "X-Amz-Expires": str(expires),
                "Expires": expiry.strftime(SERVER_TIME_FORMAT),
                "ServerTime": now.strftime(SERVER_TIME_FORMAT),
            },
        )


def _access_denied(message: str, fields: dict[str, str]) -> S3Error:
    """AccessDenied with `fields`, whose names no keyword argument can spell."""
    error = S3Error("AccessDenied", message)
    error.extra.update(fields)
    return error


def _header_payload_hash(headers: Mapping[str, str]) -> str:
    value = headers.get("x-amz-content-sha256")
    if value is None:
        raise S3Error(
            "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"
        )
    value = value.strip()
    if (
        value not in STREAMING_VALUES
        and value != UNSIGNED_PAYLOAD
        and not _SHA256_HEX.fullmatch(value)
    ):
        raise S3Error(
            "InvalidArgument",
            "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER "
            "or a valid sha256 value.",
            ArgumentName="x-amz-content-sha256",
            ArgumentValue=value,
        )
    return value


def _presigned_payload_hashes(
    params: Mapping[str, str], headers: Mapping[str, str]
) -> tuple[str, ...]:
    """Payload hashes a presigning client may have used, most likely first."""
    if "X-Amz-Content-Sha256" in params:
        return (params["X-Amz-Content-Sha256"],)
    header = headers.get("x-amz-content-sha256")
    if header is not None and header.strip() != UNSIGNED_PAYLOAD:
        return (header.strip(), UNSIGNED_PAYLOAD)
    return (UNSIGNED_PAYLOAD,)


def _unsigned_amz_headers(headers: Mapping[str, str], signed: Sequence[str]) -> list[str]:
    signed_set = set(signed)
    return sorted(
        name
        for name in headers
        if name.startswith("x-amz-")
        and name not in signed_set
        and name not in UNSIGNED_AMZ_HEADERS_ALLOWED
    )


def _first_values(query: Iterable[tuple[str, str]]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in query:
        params.setdefault(name, value)
    return params


def authenticate(
    method: str,
    raw_path: str,
    query: list[tuple[str, str]],
    headers: Mapping[str, str],
    lookup_secret: Callable[[str], str | None],
    now: datetime,
    region: str,
    service: str = "s3",
) -> AuthContext | None:
    """Verify a SigV4 request; None for an anonymous one, S3Error when it fails.

    SigV2 requests (`sigv2.is_sigv2`) are verified by `sigv2.authenticate` instead.

    `query` holds percent-decoded (name, value) pairs in the order sent and
    `headers` lower-case names (repeated headers joined with ",").
    """
    params = _first_values(query)
    authorization = headers.get("authorization")
    query_auth = "X-Amz-Algorithm" in params or "X-Amz-Signature" in params
    if authorization is None and not query_auth:
        return None
    if authorization is not None and query_auth:
        raise several_mechanisms(authorization)

    if authorization is not None:
        request = _parse_authorization(authorization, headers)
        payload_hashes: tuple[str, ...] = (_header_payload_hash(headers),)
        canonical_params = query
        _check_scope(request.credential, region, service, presigned=False)
    else:
        request, expires = _parse_presigned(params)
        payload_hashes = _presigned_payload_hashes(params, headers)
        canonical_params = [(name, value) for name, value in query if name != "X-Amz-Signature"]
        _check_scope(request.credential, region, service, presigned=True)

    credential = request.credential
    secret = lookup_secret(credential.access_key_id)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=credential.access_key_id)

    if request.presigned:
        _check_presigned_time(request, expires, now)
    else:
        _check_header_time(request, now)

    signing_key = derive_signing_key(secret, credential.date, credential.region, credential.service)
    canonical_query = canonical_query_string(canonical_params)
    matched_hash = _verify(
        request,
        signing_key,
        method,
        raw_path,
        canonical_query,
        headers,
        payload_hashes,
    )

    unsigned = _unsigned_amz_headers(headers, request.signed_headers)
    if unsigned:
        raise S3Error(
            "AccessDenied",
            "There were headers present in the request which were not signed",
            HeadersNotSigned=", ".join(unsigned),
        )

    return AuthContext(
        access_key_id=credential.access_key_id,
        region=credential.region,
        service=credential.service,
        date=credential.date,
        timestamp=request.timestamp,
        scope=credential.scope,
        signing_key=signing_key,
        signature=request.signature,
        content_sha256=matched_hash,
        presigned=request.presigned,
    )


def _candidate_uris(raw_path: str) -> Iterator[str]:
    rebuilt = canonical_uri(raw_path)
    yield rebuilt
    if raw_path and raw_path != rebuilt:
        yield raw_path


def _verify(
    request: _SignedRequest,
    signing_key: bytes,
    method: str,
    raw_path: str,
    canonical_query: str,
    headers: Mapping[str, str],
    payload_hashes: Sequence[str],
) -> str:
    """Check the signature against each acceptable canonical form; return the payload hash used."""
    scope = request.credential.scope
    first: tuple[str, str] | None = None
    for payload_hash in payload_hashes:
        for uri in _candidate_uris(raw_path):
            canonical = canonical_request(
                method, uri, canonical_query, headers, request.signed_headers, payload_hash
            )
            text = string_to_sign(request.timestamp, scope, canonical)
            if signatures_equal(sign(signing_key, text), request.signature):
                return payload_hash
            if first is None:
                first = (canonical, text)
    assert first is not None
    canonical, text = first
    raise S3Error(
        "SignatureDoesNotMatch",
        AWSAccessKeyId=request.credential.access_key_id,
        StringToSign=text,
        SignatureProvided=request.signature,
        CanonicalRequest=canonical,
    )
