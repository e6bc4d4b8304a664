"""Object lock with boto3: buckets created with it, its configuration and default
retention, retention (GOVERNANCE, COMPLIANCE) and legal hold set by the write or
later, and what they forbid; through a cluster, a node whose clock runs ahead
cannot end a retention early."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import start_cluster, wait_until

MiB = 1 << 20


def error_of(error: ClientError) -> tuple[int, str]:
    return error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]


def refused(call, **args) -> tuple[int, str]:
    with pytest.raises(ClientError) as caught:
        call(**args)
    return error_of(caught.value)


def ahead(**delta) -> datetime:
    return datetime.now(UTC) + timedelta(**delta)


@pytest.fixture
def locked(s3) -> str:
    name = f"locked-{time.monotonic_ns()}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def test_a_bucket_created_with_object_lock_is_versioned_for_good(s3, locked):
    assert s3.get_bucket_versioning(Bucket=locked)["Status"] == "Enabled"
    config = s3.get_object_lock_configuration(Bucket=locked)["ObjectLockConfiguration"]
    assert config == {"ObjectLockEnabled": "Enabled"}
    assert refused(
        s3.put_bucket_versioning, Bucket=locked, VersioningConfiguration={"Status": "Suspended"}
    ) == (409, "InvalidBucketState")


def test_the_default_retention_locks_new_versions(s3, locked):
    rule = {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}
    s3.put_object_lock_configuration(
        Bucket=locked, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": rule}
    )
    config = s3.get_object_lock_configuration(Bucket=locked)["ObjectLockConfiguration"]
    assert config["Rule"] == rule
    version = s3.put_object(Bucket=locked, Key="k", Body=b"x")["VersionId"]
    head = s3.head_object(Bucket=locked, Key="k")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert ahead(hours=23) < head["ObjectLockRetainUntilDate"] < ahead(hours=25)
    retention = s3.get_object_retention(Bucket=locked, Key="k", VersionId=version)["Retention"]
    assert retention["Mode"] == "GOVERNANCE"


def test_object_lock_needs_a_versioned_bucket(s3, bucket):
    assert refused(s3.get_object_lock_configuration, Bucket=bucket) == (
        404,
        "ObjectLockConfigurationNotFoundError",
    )
    enabled = {"ObjectLockEnabled": "Enabled"}
    assert refused(
        s3.put_object_lock_configuration, Bucket=bucket, ObjectLockConfiguration=enabled
    ) == (409, "InvalidBucketState")
    assert refused(
        s3.put_object,
        Bucket=bucket,
        Key="k",
        Body=b"x",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=ahead(days=1),
    ) == (400, "InvalidRequest")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=enabled)
    assert s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"] == enabled


@pytest.mark.parametrize("size", [10, 2 * MiB], ids=["inline", "blocks"])
def test_compliance_retention_forbids_deletion_and_only_extends(s3, locked, size):
    body = b"k" * size
    version = s3.put_object(
        Bucket=locked,
        Key="k",
        Body=body,
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=ahead(days=1),
    )["VersionId"]
    delete = {"Bucket": locked, "Key": "k", "VersionId": version}
    assert refused(s3.delete_object, **delete) == (403, "AccessDenied")
    assert refused(s3.delete_object, **delete, BypassGovernanceRetention=True) == (
        403,
        "AccessDenied",
    )
    shorter = {"Mode": "COMPLIANCE", "RetainUntilDate": ahead(hours=1)}
    assert refused(s3.put_object_retention, **delete, Retention=shorter) == (403, "AccessDenied")
    governance = {"Mode": "GOVERNANCE", "RetainUntilDate": ahead(days=2)}
    assert refused(
        s3.put_object_retention, **delete, Retention=governance, BypassGovernanceRetention=True
    ) == (403, "AccessDenied")
    longer = ahead(days=3)
    s3.put_object_retention(**delete, Retention={"Mode": "COMPLIANCE", "RetainUntilDate": longer})
    kept = s3.get_object_retention(**delete)["Retention"]
    assert abs((kept["RetainUntilDate"] - longer).total_seconds()) < 1
    # A delete marker may go over it: the version stays.
    assert s3.delete_object(Bucket=locked, Key="k")["DeleteMarker"] is True
    assert s3.get_object(**delete)["Body"].read() == body
    deleted = s3.delete_objects(
        Bucket=locked, Delete={"Objects": [{"Key": "k", "VersionId": version}]}
    )
    assert deleted["Errors"][0]["Code"] == "AccessDenied"


def test_governance_retention_yields_only_to_the_bypass(s3, locked):
    version = s3.put_object(
        Bucket=locked,
        Key="k",
        Body=b"x",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=ahead(days=1),
    )["VersionId"]
    named = {"Bucket": locked, "Key": "k", "VersionId": version}
    assert refused(s3.delete_object, **named) == (403, "AccessDenied")
    shorter = {"Mode": "GOVERNANCE", "RetainUntilDate": ahead(hours=1)}
    assert refused(s3.put_object_retention, **named, Retention=shorter) == (403, "AccessDenied")
    s3.put_object_retention(**named, Retention=shorter, BypassGovernanceRetention=True)
    s3.delete_object(**named, BypassGovernanceRetention=True)
    assert refused(s3.get_object, **named) == (404, "NoSuchVersion")


def test_a_legal_hold_forbids_deletion_until_lifted(s3, locked):
    version = s3.put_object(Bucket=locked, Key="k", Body=b"x", ObjectLockLegalHoldStatus="ON")[
        "VersionId"
    ]
    named = {"Bucket": locked, "Key": "k", "VersionId": version}
    assert s3.get_object_legal_hold(**named)["LegalHold"]["Status"] == "ON"
    assert refused(s3.delete_object, **named, BypassGovernanceRetention=True) == (
        403,
        "AccessDenied",
    )
    s3.put_object_legal_hold(**named, LegalHold={"Status": "OFF"})
    assert s3.get_object_legal_hold(**named)["LegalHold"]["Status"] == "OFF"
    s3.delete_object(**named)
    assert refused(s3.head_object, **named)[0] == 404  # HEAD: no body, no code


def test_a_retention_that_ran_out_no_longer_protects(s3, locked):
    version = s3.put_object(
        Bucket=locked,
        Key="k",
        Body=b"x",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=ahead(seconds=2),
    )["VersionId"]
    named = {"Bucket": locked, "Key": "k", "VersionId": version}
    deadline = time.monotonic() + 30
    while True:
        try:
            s3.delete_object(**named)
            break
        except ClientError as error:
            assert error_of(error) == (403, "AccessDenied")
            assert time.monotonic() < deadline, "the retention never ran out"
            time.sleep(0.5)
    assert refused(s3.get_object, **named) == (404, "NoSuchVersion")


def test_lock_headers_are_checked(s3, locked):
    base = {"Bucket": locked, "Key": "k", "Body": b"x"}
    assert refused(s3.put_object, **base, ObjectLockMode="GOVERNANCE") == (400, "InvalidArgument")
    assert refused(
        s3.put_object,
        **base,
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=datetime.now(UTC) - timedelta(days=1),
    ) == (400, "InvalidArgument")


def test_a_multipart_upload_and_a_copy_take_the_lock_they_ask_for(s3, locked):
    until = ahead(days=1)
    upload = s3.create_multipart_upload(
        Bucket=locked, Key="mpu", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until
    )["UploadId"]
    part = s3.upload_part(Bucket=locked, Key="mpu", UploadId=upload, PartNumber=1, Body=b"p")
    done = s3.complete_multipart_upload(
        Bucket=locked,
        Key="mpu",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert s3.head_object(Bucket=locked, Key="mpu")["ObjectLockMode"] == "COMPLIANCE"
    named = {"Bucket": locked, "Key": "mpu", "VersionId": done["VersionId"]}
    assert refused(s3.delete_object, **named) == (403, "AccessDenied")
    s3.copy_object(
        Bucket=locked,
        Key="copy",
        CopySource={"Bucket": locked, "Key": "mpu"},
        ObjectLockLegalHoldStatus="ON",
    )
    assert s3.head_object(Bucket=locked, Key="copy")["ObjectLockLegalHoldStatus"] == "ON"


SKEW_MS = 10 * 60 * 1000  # ahead by 10 minutes: within S3's 15-minute signature window


@pytest.fixture(scope="module")
def skewed_cluster(tmp_path_factory):
    """Three nodes; node 2's clock runs 10 minutes ahead."""
    cluster = start_cluster(
        tmp_path_factory.mktemp("lock"),
        3,
        ["dc1", "dc2", "dc3"],
        per_node={2: {"clock_offset_ms": SKEW_MS}},
    )
    yield cluster
    cluster.stop()


def test_a_node_whose_clock_runs_ahead_cannot_end_a_retention_early(skewed_cluster):
    honest, skewed = skewed_cluster.nodes[0].client(), skewed_cluster.nodes[2].client()
    honest.create_bucket(Bucket="vault", ObjectLockEnabledForBucket=True)
    wait_until(
        lambda: skewed.get_bucket_versioning(Bucket="vault").get("Status") == "Enabled",
        what="the bucket known to the skewed node",
    )
    version = honest.put_object(
        Bucket="vault",
        Key="k",
        Body=b"kept",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=ahead(minutes=5),
    )["VersionId"]
    named = {"Bucket": "vault", "Key": "k", "VersionId": version}
    # By the skewed node's clock the retention is over; by the others' it is not.
    assert refused(skewed.delete_object, **named) == (403, "AccessDenied")
    assert honest.get_object(**named)["Body"].read() == b"kept"
    hold = {"Status": "ON"}
    skewed.put_object_legal_hold(**named, LegalHold=hold)
    assert honest.get_object_legal_hold(**named)["LegalHold"] == hold
