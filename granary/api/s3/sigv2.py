"""AWS Signature Version 2 verification for S3 requests, sans-IO.

Older SDKs, s3cmd (`signature_v2 = True`) and boto3's default presigner still
sign this way: HMAC-SHA1 over

    METHOD \\n Content-MD5 \\n Content-Type \\n Date-or-Expires \\n
    x-amz-headers (lower-case, sorted, `name:value\\n` each) resource

where the resource is the bucket-and-key path plus the sub-resources S3 signs.
Two forms carry the signature: an `Authorization: AWS key:signature` header
(the request time is `Date`, or `x-amz-date`, within 15 minutes of ours), and
presigned `AWSAccessKeyId`, `Signature` and `Expires` (epoch seconds) query
parameters. The payload is never signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import unquote

from granary.api.s3.errors import S3Error
from granary.api.s3.numbers import parse_decimal
from granary.api.s3.sigv4 import (
    MAX_CLOCK_SKEW,
    SERVER_TIME_FORMAT,
    UNSIGNED_PAYLOAD,
    AuthContext,
    canonical_uri,
    several_mechanisms,
    signatures_equal,
)

PRESIGNED_PARAMETERS = ("AWSAccessKeyId", "Signature", "Expires")

# Query parameters that are part of the signed resource (the sub-resources
# and response overrides S3 and the SDKs sign); any other is left out.
SIGNED_SUBRESOURCES = frozenset(
    {
        "accelerate",
        "acl",
        "analytics",
        "cors",
        "defaultObjectAcl",
        "delete",
        "inventory",
        "lifecycle",
        "location",
        "logging",
        "metrics",
        "notification",
        "object-lock",
        "partNumber",
        "policy",
        "replication",
        "requestPayment",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "response-content-language",
        "response-content-type",
        "response-expires",
        "restore",
        "select",
        "select-type",
        "storageClass",
        "tagging",
        "torrent",
        "uploadId",
        "uploads",
        "versionId",
        "versioning",
        "versions",
        "website",
    }
)

_INVALID_DATE = "AWS authentication requires a valid Date or x-amz-date header"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def is_sigv2(headers: Mapping[str, str], params: Mapping[str, str]) -> bool:
    """Whether a request is signed with SigV2: an `AWS ` Authorization or presigned parameters."""
    authorization = headers.get("authorization")
    if authorization is not None:
        return authorization.startswith("AWS ")
    return "AWSAccessKeyId" in params or ("Signature" in params and "X-Amz-Algorithm" not in params)


def sign(secret: str, text: str) -> str:
    """Base64 of HMAC-SHA1(secret, text), the SigV2 signature."""
    digest = hmac.new(
        secret.encode("utf-8"), text.encode("utf-8", "surrogateescape"), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def canonical_amz_headers(headers: Mapping[str, str]) -> str:
    """`name:value\\n` for each x-amz-* header, by name (repeated ones arrive joined with `,`)."""
    amz = sorted(
        (name.lower(), value.strip())
        for name, value in headers.items()
        if name.lower().startswith("x-amz-")
    )
    return "".join(f"{name}:{value}\n" for name, value in amz)


def canonical_subresources(raw_query: str) -> str:
    """`?name[=value]&...` of the signed sub-resources, sorted by name, values decoded."""
    pairs: list[tuple[str, str]] = []
    for part in raw_query.split("&"):
        name, sep, value = part.partition("=")
        if name in SIGNED_SUBRESOURCES:
            pairs.append((name, f"{name}={unquote(value)}" if sep else name))
    if not pairs:
        return ""
    pairs.sort(key=lambda pair: pair[0])
    return "?" + "&".join(text for _, text in pairs)


def string_to_sign(
    method: str,
    headers: Mapping[str, str],
    date_line: str,
    resource: str,
) -> str:
    """The SigV2 string to sign; `headers` hold the x-amz-* ones signed (lower-case names)."""
    return (
        f"{method}\n"
        f"{headers.get('content-md5', '').strip()}\n"
        f"{headers.get('content-type', '').strip()}\n"
        f"{date_line}\n"
        f"{canonical_amz_headers(headers)}{resource}"
    )


def authenticate(
    method: str,
    raw_path: str,
    raw_query: str,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    lookup_secret: Callable[[str], str | None],
    now: datetime,
    region: str,
    *,
    bucket_prefix: str = "",
) -> AuthContext:
    """Verify a SigV2 request (see `is_sigv2`); raise S3Error when it fails.

    `params` holds the first value of each decoded query parameter and
    `headers` lower-case names. `bucket_prefix` is `/bucket` for a
    virtual-hosted request, whose signed resource names the bucket.
    """
    authorization = headers.get("authorization")
    if authorization is not None:
        if "Signature" in params or "X-Amz-Signature" in params:
            raise several_mechanisms(authorization)
        access_key_id, signature = _parse_authorization(authorization)
        signed_headers = headers
        date_lines = _header_date_lines(headers, now)
        presigned = False
    else:
        access_key_id, signature, expires = _parse_presigned(params, now)
        signed_headers = _presigned_headers(params, headers)
        date_lines = (expires,)
        presigned = True
    secret = lookup_secret(access_key_id)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=access_key_id)
    subresources = canonical_subresources(raw_query)
    first_text: str | None = None
    for date_line in date_lines:
        for path in _candidate_paths(raw_path):
            text = string_to_sign(
                method, signed_headers, date_line, bucket_prefix + path + subresources
            )
            if signatures_equal(sign(secret, text), signature):
                return AuthContext(
                    access_key_id=access_key_id,
                    region=region,
                    service="s3",
                    date="",
                    timestamp="",
                    scope="",
                    signing_key=b"",
                    signature=signature,
                    content_sha256=UNSIGNED_PAYLOAD,
                    presigned=presigned,
                )
            first_text = first_text or text
    raise S3Error(
        "SignatureDoesNotMatch",
        AWSAccessKeyId=access_key_id,
        StringToSign=first_text or "",
        SignatureProvided=signature,
    )


def _candidate_paths(raw_path: str) -> Iterator[str]:
    """The path as sent, then its strictly re-encoded form (clients escape differently).

    A path-style bucket request (`/bucket`) is signed as `/bucket/` by botocore.
    """
    yield raw_path
    rebuilt = canonical_uri(raw_path)
    if rebuilt != raw_path:
        yield rebuilt
    if raw_path.count("/") == 1 and raw_path != "/":
        yield raw_path + "/"


def _parse_authorization(value: str) -> tuple[str, str]:
    access_key_id, sep, signature = value[len("AWS ") :].strip().rpartition(":")
    if not sep or not access_key_id or not signature:
        raise S3Error(
            "InvalidArgument",
            "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature",
            ArgumentName="Authorization",
            ArgumentValue=value,
        )
    return access_key_id, signature


def _header_date_lines(headers: Mapping[str, str], now: datetime) -> tuple[str, ...]:
    """The Date lines a header-signed request may have signed, after checking its time.

    With x-amz-date, S3 signs an empty Date line; some clients put the Date
    header there all the same, so both are tried.
    """
    amz_date = headers.get("x-amz-date")
    date = headers.get("date")
    moment = _http_date(amz_date if amz_date is not None else date)
    if moment is None:
        raise S3Error("AccessDenied", _INVALID_DATE)
    if abs(moment - now) > MAX_CLOCK_SKEW:
        raise S3Error(
            "RequestTimeTooSkewed",
            RequestTime=(amz_date if amz_date is not None else date or "").strip(),
            ServerTime=now.strftime(SERVER_TIME_FORMAT),
            MaxAllowedSkewMilliseconds=str(int(MAX_CLOCK_SKEW.total_seconds() * 1000)),
        )
    if amz_date is None:
        return ((date or "").strip(),)
    return ("", (date or "").strip()) if date is not None else ("",)


def _http_date(value: str | None) -> datetime | None:
    """An HTTP date; None when unreadable or before the Unix epoch (S3 refuses those)."""
    if value is None:
        return None
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment if moment >= _EPOCH else None


def _parse_presigned(params: Mapping[str, str], now: datetime) -> tuple[str, str, str]:
    if any(not params.get(name) for name in PRESIGNED_PARAMETERS):
        raise S3Error(
            "AccessDenied",
            "Query-string authentication requires the Signature, Expires and "
            "AWSAccessKeyId parameters",
        )
    expires = params["Expires"]
    expiry = parse_decimal(expires)
    if expiry is None:
        raise S3Error("AccessDenied", f"Invalid date (should be seconds since epoch): {expires}")
    if now.timestamp() > expiry:
        raise S3Error(
            "AccessDenied",
            "Request has expired",
            Expires=datetime.fromtimestamp(expiry, UTC).strftime(SERVER_TIME_FORMAT),
            ServerTime=now.strftime(SERVER_TIME_FORMAT),
        )
    return params["AWSAccessKeyId"], params["Signature"], expires


def _presigned_headers(params: Mapping[str, str], headers: Mapping[str, str]) -> dict[str, str]:
    """The headers a presigned URL signed: the request's, and those the URL carries as parameters.

    A presigner moves x-amz-*, Content-Type and Content-MD5 into the query;
    a header sent with the request is used when both are present.
    """
    signed = {
        name.lower(): value
        for name, value in params.items()
        if name.lower().startswith("x-amz-") or name.lower() in ("content-type", "content-md5")
    }
    signed.update(
        (name, value)
        for name, value in headers.items()
        if name.startswith("x-amz-") or name in ("content-type", "content-md5")
    )
    return signed
