"""ACLs as S3 answers them for a bucket whose ACLs are disabled: reads show the
owner's FULL_CONTROL, writes are taken only when they grant nothing more, anything
else is AccessControlListNotSupported (access is granted per key, not by ACL)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import ACCESS_KEY

OWNER_ONLY = [
    {
        "Grantee": {"ID": ACCESS_KEY, "DisplayName": ACCESS_KEY, "Type": "CanonicalUser"},
        "Permission": "FULL_CONTROL",
    }
]


def error_of(error: ClientError) -> tuple[int, str]:
    return error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]


def test_bucket_and_object_acls_show_the_owner_alone(s3, bucket):
    acl = s3.get_bucket_acl(Bucket=bucket)
    assert acl["Owner"] == {"ID": ACCESS_KEY, "DisplayName": ACCESS_KEY}
    assert acl["Grants"] == OWNER_ONLY
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert s3.get_object_acl(Bucket=bucket, Key="k")["Grants"] == OWNER_ONLY
    with pytest.raises(ClientError) as missing:
        s3.get_object_acl(Bucket=bucket, Key="absent")
    assert error_of(missing.value) == (404, "NoSuchKey")


@pytest.mark.parametrize("canned", ["private", "bucket-owner-full-control"])
def test_owner_only_acls_are_taken(s3, bucket, canned):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    before = s3.head_object(Bucket=bucket, Key="k")["LastModified"]
    s3.put_bucket_acl(Bucket=bucket, ACL=canned)
    s3.put_object_acl(Bucket=bucket, Key="k", ACL=canned)
    assert s3.get_object_acl(Bucket=bucket, Key="k")["Grants"] == OWNER_ONLY
    assert s3.head_object(Bucket=bucket, Key="k")["LastModified"] == before


@pytest.mark.parametrize(
    "acl",
    [
        {"ACL": "public-read"},
        {"ACL": "authenticated-read"},
        {"GrantRead": 'uri="http://acs.amazonaws.com/groups/global/AllUsers"'},
        {
            "AccessControlPolicy": {
                "Grants": OWNER_ONLY,
                "Owner": {"ID": ACCESS_KEY, "DisplayName": ACCESS_KEY},
            }
        },
    ],
    ids=["public-read", "authenticated-read", "grant-header", "policy-body"],
)
def test_acls_that_would_grant_more_are_refused_not_ignored(s3, bucket, acl):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as on_bucket:
        s3.put_bucket_acl(Bucket=bucket, **acl)
    assert error_of(on_bucket.value) == (400, "AccessControlListNotSupported")
    with pytest.raises(ClientError) as on_object:
        s3.put_object_acl(Bucket=bucket, Key="k", **acl)
    assert error_of(on_object.value) == (400, "AccessControlListNotSupported")
    assert s3.get_bucket_acl(Bucket=bucket)["Grants"] == OWNER_ONLY


def test_versions_have_acls_by_id(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"1")["VersionId"]
    s3.put_object(Bucket=bucket, Key="k", Body=b"2")
    got = s3.get_object_acl(Bucket=bucket, Key="k", VersionId=first)
    assert got["Grants"] == OWNER_ONLY
    assert got["ResponseMetadata"]["HTTPHeaders"]["x-amz-version-id"] == first
    with pytest.raises(ClientError) as unknown:
        s3.get_object_acl(Bucket=bucket, Key="k", VersionId="0" * 32)
    assert error_of(unknown.value) == (404, "NoSuchVersion")
