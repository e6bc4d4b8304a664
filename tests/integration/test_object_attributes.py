"""GetObjectAttributes, and the checksums of multipart objects and their parts."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from botocore.exceptions import ClientError

MIB = 1 << 20


def test_attributes_of_a_plain_object(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="plain", Body=b"abc", ChecksumAlgorithm="SHA256")
    attributes = s3.get_object_attributes(
        Bucket=bucket,
        Key="plain",
        ObjectAttributes=["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"],
    )
    assert attributes["ETag"] == put["ETag"].strip('"')
    assert attributes["ObjectSize"] == 3
    assert attributes["StorageClass"] == "STANDARD"
    assert (
        attributes["Checksum"]["ChecksumSHA256"]
        == base64.b64encode(hashlib.sha256(b"abc").digest()).decode()
    )
    assert attributes["Checksum"]["ChecksumType"] == "FULL_OBJECT"
    assert "ObjectParts" not in attributes


def test_attributes_of_a_multipart_object_page_through_parts(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="CRC32")[
        "UploadId"
    ]
    bodies = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(100)]
    parts = []
    for number, body in enumerate(bodies, start=1):
        result = s3.upload_part(
            Bucket=bucket,
            Key="mp",
            UploadId=upload_id,
            PartNumber=number,
            Body=body,
            ChecksumAlgorithm="CRC32",
        )
        parts.append(
            {"PartNumber": number, "ETag": result["ETag"], "ChecksumCRC32": result["ChecksumCRC32"]}
        )
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    assert done["ChecksumType"] == "COMPOSITE"
    assert done["ChecksumCRC32"].endswith("-3")

    page = s3.get_object_attributes(
        Bucket=bucket,
        Key="mp",
        ObjectAttributes=["ObjectParts", "ObjectSize", "Checksum"],
        MaxParts=1,
        PartNumberMarker=1,
    )
    assert page["ObjectSize"] == sum(map(len, bodies))
    assert page["ObjectParts"]["TotalPartsCount"] == 3
    assert page["ObjectParts"]["IsTruncated"] is True
    assert page["ObjectParts"]["NextPartNumberMarker"] == 2
    [part] = page["ObjectParts"]["Parts"]
    assert (part["PartNumber"], part["Size"]) == (2, 5 * MIB)
    assert part["ChecksumCRC32"] == parts[1]["ChecksumCRC32"]
    assert page["Checksum"]["ChecksumCRC32"] == done["ChecksumCRC32"]

    second = s3.get_object(Bucket=bucket, Key="mp", PartNumber=2)
    assert second["ChecksumCRC32"] == parts[1]["ChecksumCRC32"]
    assert second["Body"].read() == bodies[1]
    head = s3.head_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == done["ChecksumCRC32"]
    assert head["ChecksumType"] == "COMPOSITE"


def test_unknown_attribute_is_rejected(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as caught:
        s3.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=["Colour"])
    assert caught.value.response["Error"]["Code"] == "InvalidArgument"
    with pytest.raises(ClientError) as caught:
        s3.get_object_attributes(Bucket=bucket, Key="missing", ObjectAttributes=["ETag"])
    assert caught.value.response["Error"]["Code"] == "NoSuchKey"
