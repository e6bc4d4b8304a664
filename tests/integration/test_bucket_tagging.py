"""Bucket tagging with boto3: Put/Get/DeleteBucketTagging, S3's limits, and the tag
set seen through every node of a cluster."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import start_cluster, wait_until


def error_code(error: ClientError) -> tuple[int, str]:
    return error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]


def tag_set(pairs: list[tuple[str, str]]) -> dict:
    return {"TagSet": [{"Key": key, "Value": value} for key, value in pairs]}


def tags_of(client, bucket: str) -> list | None:
    try:
        return client.get_bucket_tagging(Bucket=bucket)["TagSet"]
    except ClientError:
        return None


def test_put_get_replace_and_delete(s3, bucket):
    with pytest.raises(ClientError) as none_yet:
        s3.get_bucket_tagging(Bucket=bucket)
    assert error_code(none_yet.value) == (404, "NoSuchTagSet")
    pairs = [("team", "storage"), ("cost centre", "42 / ops"), ("empty", "")]
    s3.put_bucket_tagging(Bucket=bucket, Tagging=tag_set(pairs))
    got = s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
    assert [(t["Key"], t["Value"]) for t in got] == pairs
    s3.put_bucket_tagging(Bucket=bucket, Tagging=tag_set([("only", "this")]))
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == [{"Key": "only", "Value": "this"}]
    s3.delete_bucket_tagging(Bucket=bucket)
    with pytest.raises(ClientError) as deleted:
        s3.get_bucket_tagging(Bucket=bucket)
    assert error_code(deleted.value) == (404, "NoSuchTagSet")


@pytest.mark.parametrize(
    "pairs",
    [
        [(f"k{i}", "v") for i in range(51)],
        [("same", "a"), ("same", "b")],
        [("k" * 129, "v")],
        [("k", "v" * 257)],
    ],
    ids=["51 tags", "a key twice", "long key", "long value"],
)
def test_invalid_tag_sets_are_refused_and_change_nothing(s3, bucket, pairs):
    s3.put_bucket_tagging(Bucket=bucket, Tagging=tag_set([("kept", "yes")]))
    with pytest.raises(ClientError) as refused:
        s3.put_bucket_tagging(Bucket=bucket, Tagging=tag_set(pairs))
    assert error_code(refused.value) == (400, "InvalidTag")
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == [{"Key": "kept", "Value": "yes"}]


def test_tagging_a_missing_bucket(s3):
    with pytest.raises(ClientError) as missing:
        s3.put_bucket_tagging(Bucket="no-such-bucket-here", Tagging=tag_set([("a", "b")]))
    assert error_code(missing.value) == (404, "NoSuchBucket")


def test_the_tag_set_reaches_every_node(tmp_path):
    cluster = start_cluster(tmp_path / "cluster", 3, ["dc1", "dc2", "dc3"])
    try:
        first = cluster.nodes[0].client()
        first.create_bucket(Bucket="tagged")
        first.put_bucket_tagging(Bucket="tagged", Tagging=tag_set([("where", "everywhere")]))
        for node in cluster.nodes[1:]:
            client = node.client()
            wait_until(
                lambda c=client: (
                    c.get_bucket_tagging(Bucket="tagged")["TagSet"]
                    == [{"Key": "where", "Value": "everywhere"}]
                ),
                what="the tag set on every node",
            )
    finally:
        cluster.stop()
