"""Bucket lifecycle with boto3: the configuration as S3 checks and returns it, the
x-amz-expiration header, and the worker applying the rules on a node whose lifecycle
day lasts one second (`lifecycle_day_secs`, as Ceph's rgw_lc_debug_interval): current
versions expire, noncurrent versions beyond the newest kept go, lone delete markers
go, old uploads are aborted, and a version under object lock stays."""

from __future__ import annotations

import json
import time

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import start_cluster, start_configured, wait_until

DAY_SECS = 1.0


def error_of(error: ClientError) -> tuple[int, str]:
    return error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]


def put_rules(s3, bucket: str, *rules: dict) -> None:
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": list(rules)}
    )


def test_configuration_is_kept_as_given_and_checked(s3, bucket):
    with pytest.raises(ClientError) as none:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert error_of(none.value) == (404, "NoSuchLifecycleConfiguration")
    rules = [
        {"ID": "a", "Expiration": {"Days": 31}, "Prefix": "logs/", "Status": "Enabled"},
        {
            "ID": "b",
            "Filter": {"And": {"Prefix": "tmp/", "Tags": [{"Key": "k", "Value": "v"}]}},
            "Status": "Disabled",
            "NoncurrentVersionExpiration": {"NoncurrentDays": 2, "NewerNoncurrentVersions": 3},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        },
    ]
    put_rules(s3, bucket, *rules)
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == rules
    for bad, code in (
        (
            {"ID": "x" * 256, "Expiration": {"Days": 1}, "Prefix": "", "Status": "Enabled"},
            "InvalidArgument",
        ),
        (
            {"ID": "d", "Expiration": {"Days": 0}, "Prefix": "", "Status": "Enabled"},
            "InvalidArgument",
        ),
        ({"ID": "s", "Expiration": {"Days": 1}, "Prefix": "", "Status": "enabled"}, "MalformedXML"),
        (
            {"ID": "t", "Expiration": {"Date": "20200101"}, "Prefix": "", "Status": "Enabled"},
            "InvalidArgument",
        ),
    ):
        with pytest.raises(ClientError) as refused:
            put_rules(s3, bucket, bad)
        assert error_of(refused.value) == (400, code)
    with pytest.raises(ClientError) as twice:
        put_rules(s3, bucket, rules[0], {**rules[0], "Prefix": "other/"})
    assert error_of(twice.value) == (400, "InvalidArgument")
    transition = {"StorageClass": "GLACIER", "Days": 30}
    with pytest.raises(ClientError) as moving:
        put_rules(
            s3, bucket, {"ID": "m", "Transitions": [transition], "Prefix": "", "Status": "Enabled"}
        )
    assert error_of(moving.value) == (501, "NotImplemented")  # no other storage classes
    s3.delete_bucket_lifecycle(Bucket=bucket)
    with pytest.raises(ClientError):
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)


def test_a_write_is_told_when_it_expires(s3, bucket):
    put_rules(
        s3, bucket, {"ID": "r1", "Expiration": {"Days": 2}, "Prefix": "e/", "Status": "Enabled"}
    )
    written = s3.put_object(Bucket=bucket, Key="e/k", Body=b"x")
    header = written["ResponseMetadata"]["HTTPHeaders"]["x-amz-expiration"]
    assert header.startswith('expiry-date="') and header.endswith('rule-id="r1"')
    assert s3.head_object(Bucket=bucket, Key="e/k")["Expiration"] == header
    assert "Expiration" not in s3.put_object(Bucket=bucket, Key="kept", Body=b"x")


@pytest.fixture
def short_days(own_server):
    """A node whose lifecycle day lasts a second and whose worker passes every 0.2 s."""
    return start_configured(
        own_server, lifecycle_day_secs=DAY_SECS, lifecycle_interval_secs=0.2
    ), own_server


def keys_of(s3, bucket: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_the_worker_expires_what_the_rules_say(short_days):
    s3, node = short_days
    s3.create_bucket(Bucket="plain")
    for key in ("expire/a", "expire/b", "keep/a"):
        s3.put_object(Bucket="plain", Key=key, Body=b"x")
    s3.put_object(Bucket="plain", Key="tagged", Body=b"x", Tagging="temp=yes")
    upload = s3.create_multipart_upload(Bucket="plain", Key="stale")["UploadId"]
    put_rules(
        s3,
        "plain",
        {
            "ID": "p",
            "Expiration": {"Days": 1},
            "Filter": {"Prefix": "expire/"},
            "Status": "Enabled",
        },
        {
            "ID": "t",
            "Expiration": {"Days": 1},
            "Filter": {"Tag": {"Key": "temp", "Value": "yes"}},
            "Status": "Enabled",
        },
        {
            "ID": "u",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            "Filter": {},
            "Status": "Enabled",
        },
    )
    wait_until(lambda: keys_of(s3, "plain") == {"keep/a"}, timeout=30, what="expiry")
    wait_until(
        lambda: not s3.list_multipart_uploads(Bucket="plain").get("Uploads"),
        timeout=30,
        what="the stale upload aborted",
    )
    with pytest.raises(ClientError):
        s3.list_parts(Bucket="plain", Key="stale", UploadId=upload)
    info = json.loads(node.cli("worker", "info", "lifecycle", "--json").stdout)
    assert info["expired"] >= 3 and info["uploads_aborted"] >= 1 and info["passes"] >= 1


def test_noncurrent_versions_and_lone_markers_go_and_locked_versions_stay(short_days):
    s3, _ = short_days
    s3.create_bucket(Bucket="vers", ObjectLockEnabledForBucket=True)
    versions = [
        s3.put_object(Bucket="vers", Key="k", Body=str(i).encode())["VersionId"] for i in range(4)
    ]
    locked = s3.put_object(
        Bucket="vers",
        Key="locked",
        Body=b"old",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=time.time() + 3600,
    )["VersionId"]
    s3.put_object(Bucket="vers", Key="locked", Body=b"new")
    s3.put_object(Bucket="vers", Key="gone", Body=b"x")
    s3.delete_object(Bucket="vers", Key="gone")
    gone = [
        v["VersionId"] for v in s3.list_object_versions(Bucket="vers", Prefix="gone")["Versions"]
    ]
    s3.delete_object(Bucket="vers", Key="gone", VersionId=gone[0])  # the marker alone is left
    put_rules(
        s3,
        "vers",
        {
            "ID": "n",
            "Filter": {},
            "Status": "Enabled",
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1, "NewerNoncurrentVersions": 1},
            "Expiration": {"ExpiredObjectDeleteMarker": True},
        },
    )

    def remaining() -> dict[str, list[str]]:
        listed = s3.list_object_versions(Bucket="vers")
        found: dict[str, list[str]] = {}
        for entry in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]:
            found.setdefault(entry["Key"], []).append(entry["VersionId"])
        return found

    wait_until(
        lambda: (
            sorted(remaining().get("k", [])) == sorted(versions[2:]) and "gone" not in remaining()
        ),
        timeout=30,
        what="noncurrent versions and the lone marker removed",
    )
    assert locked in remaining()["locked"]  # noncurrent, due, but under retention
    assert s3.get_object(Bucket="vers", Key="locked", VersionId=locked)["Body"].read() == b"old"


@pytest.fixture(scope="module")
def short_day_cluster(tmp_path_factory):
    cluster = start_cluster(
        tmp_path_factory.mktemp("lifecycle"),
        3,
        ["dc1", "dc2", "dc3"],
        lifecycle_day_secs=DAY_SECS,
        lifecycle_interval_secs=0.2,
    )
    yield cluster
    cluster.stop()


def test_one_node_of_a_cluster_runs_a_buckets_rules(short_day_cluster):
    """A bucket's rules run on the first node of its partition only: each bucket has
    one runner, and the expiry it applies reaches every node."""
    clients = [node.client() for node in short_day_cluster.nodes]
    clients[0].create_bucket(Bucket="shared")
    for index, client in enumerate(clients):
        client.put_object(Bucket="shared", Key=f"tmp/{index}", Body=b"x")
    put_rules(
        clients[1],
        "shared",
        {"ID": "t", "Expiration": {"Days": 1}, "Filter": {"Prefix": "tmp/"}, "Status": "Enabled"},
    )
    for client in clients:
        wait_until(lambda c=client: not keys_of(c, "shared"), timeout=30, what="expiry")

    def infos() -> list[dict]:
        return [
            json.loads(node.cli("worker", "info", "lifecycle", "--json").stdout)
            for node in short_day_cluster.nodes
        ]

    wait_until(lambda: all(info["passes"] >= 2 for info in infos()), what="passes everywhere")
    found = infos()
    assert sorted(info["buckets"] for info in found) == [0, 0, 1]
    assert sum(info["expired"] for info in found) == 3
