"""Which S3 operation a request is: bucket, key and operation name. Sans-IO."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, unquote_to_bytes

from granary.api.s3.errors import S3Error

# Sub-resources we do not implement: answered 501 NotImplemented.
UNSUPPORTED_SUBRESOURCES = frozenset(
    {
        "accelerate",
        "analytics",
        "cors",
        "encryption",
        "intelligent-tiering",
        "inventory",
        "logging",
        "metrics",
        "notification",
        "ownershipControls",
        "policy",
        "policyStatus",
        "publicAccessBlock",
        "replication",
        "requestPayment",
        "restore",
        "select",
        "website",
    }
)

_MALFORMED_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# C1 control characters: S3 cannot parse a URI holding one (InvalidURI).
_C1_CONTROL = re.compile("[\x80-\x9f]")


@dataclass(frozen=True)
class Route:
    operation: str
    bucket: str | None
    key: str | None


def parse_query(query_string: str) -> list[tuple[str, str]]:
    """Decode a raw query string into (name, value) pairs, keeping blanks.

    `+` is kept literally: S3 clients encode spaces as %20, and a `+` in a
    presigned URL's signature must survive.
    """
    pairs = []
    for part in query_string.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((unquote(name, errors="strict"), unquote(value, errors="strict")))
    return pairs


def decode_path(raw_path: str) -> str:
    """Percent-decode a request path; every `%` must start an escape and the
    result must be valid UTF-8 without C1 control characters (U+0080-U+009F)."""
    if _MALFORMED_ESCAPE.search(raw_path):
        raise S3Error("InvalidURI")
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI") from None
    if _C1_CONTROL.search(path):
        raise S3Error("InvalidURI")
    return path


def split_bucket_key(
    path: str, host: str | None, root_domain: str | None
) -> tuple[str | None, str | None]:
    """(bucket, key) from a decoded path, virtual-host style when it applies."""
    if root_domain and host:
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        suffix = "." + root_domain.lstrip(".")
        if hostname.endswith(suffix) and len(hostname) > len(suffix):
            key = path[1:] if path.startswith("/") else path
            return hostname[: -len(suffix)], (key or None)
    trimmed = path[1:] if path.startswith("/") else path
    if not trimmed:
        return None, None
    bucket, sep, key = trimmed.partition("/")
    return bucket, (key if sep and key else None)


def route(method: str, bucket: str | None, key: str | None, query: dict[str, str]) -> Route:
    """Name the S3 operation; raise NotImplemented/MethodNotAllowed when none fits."""
    if bucket is None:
        if method == "GET":
            return Route("ListBuckets", None, None)
        raise S3Error("MethodNotAllowed")
    for name in query:
        # GET ?torrent of an object is GetObjectTorrent; any other use is not implemented.
        torrent_elsewhere = name == "torrent" and (method != "GET" or key is None)
        if name in UNSUPPORTED_SUBRESOURCES or torrent_elsewhere:
            raise S3Error("NotImplemented", f"The '{name}' sub-resource is not implemented.")
    operation = (
        _object_operation(method, query) if key is not None else _bucket_operation(method, query)
    )
    return Route(operation, bucket, key)


def _bucket_operation(method: str, query: dict[str, str]) -> str:
    if method == "GET":
        for flag, operation in (
            ("location", "GetBucketLocation"),
            ("acl", "GetBucketAcl"),
            ("versioning", "GetBucketVersioning"),
            ("tagging", "GetBucketTagging"),
            ("object-lock", "GetObjectLockConfiguration"),
            ("lifecycle", "GetBucketLifecycleConfiguration"),
            ("versions", "ListObjectVersions"),
            ("uploads", "ListMultipartUploads"),
        ):
            if flag in query:
                return operation
        if query.get("list-type") == "2":
            return "ListObjectsV2"
        return "ListObjects"
    if method == "HEAD":
        return "HeadBucket"
    if method == "PUT":
        if "acl" in query:
            return "PutBucketAcl"
        if "versioning" in query:
            return "PutBucketVersioning"
        if "tagging" in query:
            return "PutBucketTagging"
        if "object-lock" in query:
            return "PutObjectLockConfiguration"
        if "lifecycle" in query:
            return "PutBucketLifecycleConfiguration"
        return "CreateBucket"
    if method == "DELETE":
        if "lifecycle" in query:
            return "DeleteBucketLifecycle"
        return "DeleteBucketTagging" if "tagging" in query else "DeleteBucket"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    raise S3Error("MethodNotAllowed")


_OBJECT_TAGGING = {
    "GET": "GetObjectTagging",
    "PUT": "PutObjectTagging",
    "DELETE": "DeleteObjectTagging",
}


_OBJECT_ACL = {"GET": "GetObjectAcl", "PUT": "PutObjectAcl"}


_OBJECT_LOCK = {
    ("GET", "retention"): "GetObjectRetention",
    ("PUT", "retention"): "PutObjectRetention",
    ("GET", "legal-hold"): "GetObjectLegalHold",
    ("PUT", "legal-hold"): "PutObjectLegalHold",
}


def _object_operation(method: str, query: dict[str, str]) -> str:
    if "acl" in query:
        if method not in _OBJECT_ACL:
            raise S3Error("MethodNotAllowed")
        return _OBJECT_ACL[method]
    if "tagging" in query:
        if method not in _OBJECT_TAGGING:
            raise S3Error("MethodNotAllowed")
        return _OBJECT_TAGGING[method]
    for flag in ("retention", "legal-hold"):
        if flag in query:
            if (method, flag) not in _OBJECT_LOCK:
                raise S3Error("MethodNotAllowed")
            return _OBJECT_LOCK[(method, flag)]
    if method == "GET":
        if "attributes" in query:
            return "GetObjectAttributes"
        if "torrent" in query:
            return "GetObjectTorrent"
        return "ListParts" if "uploadId" in query else "GetObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "PUT":
        if "partNumber" in query and "uploadId" in query:
            return "UploadPart"
        return "PutObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
    raise S3Error("MethodNotAllowed")
