"""Get/PutBucketAcl and Get/PutObjectAcl, as S3 answers them for a bucket whose ACLs
are disabled (Object Ownership "bucket owner enforced", AWS's default for new
buckets).

Granary grants access per key and bucket (read, write, owner: `granary bucket
allow`), as AWS does with policies once ACLs are disabled; no ACL ever grants
anything. So an ACL read shows the one grant AWS shows then, the owner's
FULL_CONTROL (the owner being the requesting key, as in every listing here), and
an ACL write is taken only when it grants nothing more: the canned `private` or
`bucket-owner-full-control`. Any other ACL is refused with S3's
AccessControlListNotSupported rather than stored and ignored.
"""

from __future__ import annotations

from granary.api.http.types import Response
from granary.api.s3.bucket_ops import owner_node, xml_response
from granary.api.s3.context import S3Context
from granary.api.s3.errors import S3Error
from granary.api.s3.versions import load_version, version_headers
from granary.api.s3.xml import Node, document

OWNER_ONLY_ACLS = frozenset({"private", "bucket-owner-full-control"})
GRANT_HEADERS = (
    "x-amz-grant-full-control",
    "x-amz-grant-read",
    "x-amz-grant-read-acp",
    "x-amz-grant-write",
    "x-amz-grant-write-acp",
)
MAX_ACL_BODY = 64 * 1024


def _policy(ctx: S3Context) -> bytes:
    key_id = ctx.key_id or ""
    grantee: Node = (
        'Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser"',
        [("ID", key_id), ("DisplayName", key_id)],
    )
    grant: Node = ("Grant", [grantee, ("Permission", "FULL_CONTROL")])
    return document("AccessControlPolicy", [owner_node(ctx), ("AccessControlList", [grant])])


async def get_bucket_acl(ctx: S3Context) -> Response:
    ctx.require_bucket()
    return xml_response(_policy(ctx))


async def get_object_acl(ctx: S3Context) -> Response:
    version = await load_version(ctx, ctx.require_key())
    response = xml_response(_policy(ctx))
    response.headers.extend(version_headers(ctx, version))
    return response


async def put_bucket_acl(ctx: S3Context) -> Response:
    ctx.require_bucket()
    await _require_owner_only(ctx)
    return Response(200)


async def put_object_acl(ctx: S3Context) -> Response:
    version = await load_version(ctx, ctx.require_key())
    await _require_owner_only(ctx)
    return Response(200, version_headers(ctx, version))


async def _require_owner_only(ctx: S3Context) -> None:
    """Accept the ACL a write names only if it grants the owner alone (see the module
    docstring); an access-control policy in the body or grant headers grant others."""
    canned = ctx.header("x-amz-acl")
    granted = any(ctx.header(name) is not None for name in GRANT_HEADERS)
    body = await ctx.payload().read_all(MAX_ACL_BODY)
    if canned is None and not granted and not body:
        raise S3Error("MissingSecurityHeader", "Your request was missing a required header")
    if canned not in OWNER_ONLY_ACLS or granted or body:
        raise S3Error("AccessControlListNotSupported")
