"""Object tagging with boto3: Put/Get/DeleteObjectTagging, tags set by the write
(x-amz-tagging) and kept or replaced by a copy, the count in GET and HEAD, S3's
limits; and the tags of the current version only."""

from __future__ import annotations

import os

import pytest
from botocore.exceptions import ClientError

MiB = 1 << 20


def error_code(error: ClientError) -> tuple[int, str]:
    return error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]


def tags_of(s3, bucket: str, key: str) -> list[tuple[str, str]]:
    return [(t["Key"], t["Value"]) for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]]


def tag_set(pairs: list[tuple[str, str]]) -> dict:
    return {"TagSet": [{"Key": key, "Value": value} for key, value in pairs]}


@pytest.mark.parametrize("size", [10, 3 * MiB], ids=["inline", "blocks"])
def test_tags_from_the_write_then_replaced_and_deleted(s3, bucket, size):
    body = os.urandom(size)
    s3.put_object(Bucket=bucket, Key="t", Body=body, Tagging="project=granary&empty=&a%20b=c%26d")
    assert tags_of(s3, bucket, "t") == [("a b", "c&d"), ("empty", ""), ("project", "granary")]
    assert (
        s3.head_object(Bucket=bucket, Key="t")["ResponseMetadata"]["HTTPHeaders"][
            "x-amz-tagging-count"
        ]
        == "3"
    )
    assert s3.get_object(Bucket=bucket, Key="t")["TagCount"] == 3

    s3.put_object_tagging(Bucket=bucket, Key="t", Tagging=tag_set([("only", "one")]))
    assert tags_of(s3, bucket, "t") == [("only", "one")]
    assert s3.get_object(Bucket=bucket, Key="t")["Body"].read() == body  # data untouched
    s3.delete_object_tagging(Bucket=bucket, Key="t")
    assert tags_of(s3, bucket, "t") == []
    assert (
        "x-amz-tagging-count"
        not in s3.head_object(Bucket=bucket, Key="t")["ResponseMetadata"]["HTTPHeaders"]
    )


def test_a_new_version_starts_without_the_old_ones_tags(s3, bucket):
    s3.put_object(Bucket=bucket, Key="v", Body=b"one", Tagging="old=1")
    s3.put_object(Bucket=bucket, Key="v", Body=b"two")
    assert tags_of(s3, bucket, "v") == []


def test_copy_keeps_or_replaces_the_tags(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"data", Tagging="from=source")
    source = {"Bucket": bucket, "Key": "src"}
    s3.copy_object(Bucket=bucket, Key="kept", CopySource=source)
    assert tags_of(s3, bucket, "kept") == [("from", "source")]
    s3.copy_object(
        Bucket=bucket, Key="new", CopySource=source, TaggingDirective="REPLACE", Tagging="to=copy"
    )
    assert tags_of(s3, bucket, "new") == [("to", "copy")]


@pytest.mark.parametrize(
    "pairs",
    [[(f"k{i}", "v") for i in range(11)], [("same", "a"), ("same", "b")], [("k" * 129, "v")]],
    ids=["11 tags", "a key twice", "long key"],
)
def test_invalid_tag_sets_are_refused_and_change_nothing(s3, bucket, pairs):
    s3.put_object(Bucket=bucket, Key="l", Body=b"x", Tagging="kept=yes")
    with pytest.raises(ClientError) as refused:
        s3.put_object_tagging(Bucket=bucket, Key="l", Tagging=tag_set(pairs))
    assert error_code(refused.value) == (400, "InvalidTag")
    header = "&".join(f"{key}={value}" for key, value in pairs)
    with pytest.raises(ClientError) as refused_write:
        s3.put_object(Bucket=bucket, Key="l", Body=b"y", Tagging=header)
    assert error_code(refused_write.value) == (400, "InvalidTag")
    assert s3.get_object(Bucket=bucket, Key="l")["Body"].read() == b"x"
    assert tags_of(s3, bucket, "l") == [("kept", "yes")]


def test_tagging_a_missing_object(s3, bucket):
    for call in (
        lambda: s3.get_object_tagging(Bucket=bucket, Key="absent"),
        lambda: s3.put_object_tagging(Bucket=bucket, Key="absent", Tagging=tag_set([])),
        lambda: s3.delete_object_tagging(Bucket=bucket, Key="absent"),
    ):
        with pytest.raises(ClientError) as missing:
            call()
        assert error_code(missing.value) == (404, "NoSuchKey")


def test_a_multipart_upload_gets_the_tags_it_was_created_with(s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mpu", Tagging="b=2&a=1")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="mpu", UploadId=upload, PartNumber=1, Body=b"p")
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="mpu",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert tags_of(s3, bucket, "mpu") == [("a", "1"), ("b", "2")]
    assert (
        s3.head_object(Bucket=bucket, Key="mpu")["ResponseMetadata"]["HTTPHeaders"][
            "x-amz-tagging-count"
        ]
        == "2"
    )
    with pytest.raises(ClientError) as refused:
        s3.create_multipart_upload(Bucket=bucket, Key="mpu", Tagging="&".join(["k=v"] * 2))
    assert error_code(refused.value) == (400, "InvalidTag")
