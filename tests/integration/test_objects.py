"""PutObject / GetObject / HeadObject / DeleteObject / CopyObject with boto3."""

from __future__ import annotations

import hashlib
import os

import pytest
from botocore.exceptions import ClientError

SIZES = {
    "empty": 0,
    "one-byte": 1,
    "inline": 4096,
    "just-over-inline": 4097,
    "one-block": 1 << 20,
    "blocks-and-a-bit": (3 << 20) + 17,
}


def error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_put_get_round_trip(s3, bucket, size):
    data = os.urandom(size)
    put = s3.put_object(Bucket=bucket, Key="obj", Body=data)
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="obj")
    assert got["Body"].read() == data
    assert got["ContentLength"] == size
    assert got["ETag"] == put["ETag"]
    head = s3.head_object(Bucket=bucket, Key="obj")
    assert head["ContentLength"] == size


@pytest.mark.parametrize(
    "key",
    [
        "unicode-ünïcödé-日本語",
        "with space",
        "a+b",
        "a&b",
        "100%",
        "what?",
        "hash#tag",
        "double//slash",
        "/leading",
        "trailing/",
        "x" * 1024,
    ],
)
def test_unusual_keys(s3, bucket, key):
    s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == [key]
    s3.delete_object(Bucket=bucket, Key=key)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_key_too_long(s3, bucket):
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=bucket, Key="k" * 1025, Body=b"x")
    assert error_code(caught.value) == "KeyTooLongError"


def test_metadata_headers_are_stored_and_returned(s3, bucket):
    s3.put_object(
        Bucket=bucket,
        Key="meta",
        Body=b"data",
        ContentType="text/plain",
        CacheControl="max-age=60",
        ContentDisposition='attachment; filename="x.txt"',
        ContentEncoding="identity",
        ContentLanguage="fr",
        Expires="Thu, 01 Dec 2094 16:00:00 GMT",
        Metadata={"color": "blue", "Shape": "round"},
    )
    head = s3.head_object(Bucket=bucket, Key="meta")
    assert head["ContentType"] == "text/plain"
    assert head["CacheControl"] == "max-age=60"
    assert head["ContentDisposition"] == 'attachment; filename="x.txt"'
    assert head["ContentEncoding"] == "identity"
    assert head["ContentLanguage"] == "fr"
    assert head["ResponseMetadata"]["HTTPHeaders"]["expires"].endswith("01 Dec 2094 16:00:00 GMT")
    assert head["Metadata"] == {"color": "blue", "shape": "round"}


def test_default_content_type(s3, bucket):
    s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
    assert s3.head_object(Bucket=bucket, Key="plain")["ContentType"] == "binary/octet-stream"


def test_response_overrides(s3, bucket):
    s3.put_object(Bucket=bucket, Key="o", Body=b"data", ContentType="text/plain")
    got = s3.get_object(
        Bucket=bucket,
        Key="o",
        ResponseContentType="image/png",
        ResponseContentDisposition="inline",
        ResponseCacheControl="no-cache",
    )
    assert got["ContentType"] == "image/png"
    assert got["ContentDisposition"] == "inline"
    assert got["CacheControl"] == "no-cache"


@pytest.mark.parametrize("size", [100, (2 << 20) + 100])
def test_ranges(s3, bucket, size):
    data = os.urandom(size)
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    cases = {
        "bytes=0-9": data[0:10],
        "bytes=5-": data[5:],
        "bytes=-7": data[-7:],
        f"bytes=50-{size + 100}": data[50:],
    }
    if size > (1 << 20):
        cases["bytes=1048570-1048580"] = data[1048570:1048581]
    for header, expected in cases.items():
        got = s3.get_object(Bucket=bucket, Key="r", Range=header)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["Body"].read() == expected, header
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={size}-")
    assert error_code(caught.value) == "InvalidRange"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


def test_conditional_get(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="c", Body=b"abc")["ETag"]
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"abc"
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"0000"')
    assert error_code(caught.value) == "PreconditionFailed"
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    modified = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=modified)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304


def test_missing_object_and_bucket(s3, bucket):
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="nope")
    assert error_code(caught.value) == "NoSuchKey"
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="no-such-bucket-here", Key="nope")
    assert error_code(caught.value) == "NoSuchBucket"


def test_delete_is_idempotent(s3, bucket):
    s3.put_object(Bucket=bucket, Key="d", Body=b"x")
    assert s3.delete_object(Bucket=bucket, Key="d")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.delete_object(Bucket=bucket, Key="d")["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="d")


def test_delete_objects(s3, bucket):
    for name in ("a", "b", "c"):
        s3.put_object(Bucket=bucket, Key=name, Body=name.encode())
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "a"}, {"Key": "b"}, {"Key": "missing"}]}
    )
    assert sorted(d["Key"] for d in result["Deleted"]) == ["a", "b", "missing"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["c"]


@pytest.mark.parametrize("size", [10, (2 << 20) + 1])
def test_copy_object(s3, bucket, size):
    data = os.urandom(size)
    s3.put_object(
        Bucket=bucket, Key="src", Body=data, Metadata={"k": "v"}, ContentType="text/x-src"
    )
    s3.copy_object(Bucket=bucket, Key="same-meta", CopySource={"Bucket": bucket, "Key": "src"})
    copied = s3.get_object(Bucket=bucket, Key="same-meta")
    assert copied["Body"].read() == data
    assert copied["Metadata"] == {"k": "v"}
    assert copied["ContentType"] == "text/x-src"
    s3.copy_object(
        Bucket=bucket,
        Key="new-meta",
        CopySource=f"{bucket}/src",
        MetadataDirective="REPLACE",
        Metadata={"z": "1"},
        ContentType="text/y",
    )
    replaced = s3.head_object(Bucket=bucket, Key="new-meta")
    assert replaced["Metadata"] == {"z": "1"}
    assert replaced["ContentType"] == "text/y"
    s3.delete_object(Bucket=bucket, Key="src")
    assert s3.get_object(Bucket=bucket, Key="same-meta")["Body"].read() == data


def test_copy_onto_itself_needs_a_change(s3, bucket):
    s3.put_object(Bucket=bucket, Key="self", Body=b"x")
    with pytest.raises(ClientError) as caught:
        s3.copy_object(Bucket=bucket, Key="self", CopySource=f"{bucket}/self")
    assert error_code(caught.value) == "InvalidRequest"


def test_content_md5_mismatch_stores_nothing(s3, bucket):
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=bucket, Key="bad", Body=b"abc", ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg==")
    assert error_code(caught.value) == "BadDigest"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="bad")


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"])
def test_checksums_verified_and_returned(s3, bucket, algorithm):
    data = os.urandom(2 << 20)
    put = s3.put_object(Bucket=bucket, Key="ck", Body=data, ChecksumAlgorithm=algorithm)
    field = f"Checksum{algorithm}"
    assert put[field]
    got = s3.get_object(Bucket=bucket, Key="ck", ChecksumMode="ENABLED")
    assert got[field] == put[field]
    assert got["Body"].read() == data


def test_wrong_checksum_is_rejected(s3, bucket):
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=bucket, Key="ck", Body=b"hello", ChecksumCRC32="AAAAAA==")
    assert error_code(caught.value) in ("BadDigest", "InvalidRequest")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="ck")
