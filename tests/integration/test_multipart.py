"""Multipart uploads end to end with boto3: parts, completion, listing, copy, checksums."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import zlib
from collections.abc import Callable

import pytest
from botocore.exceptions import ClientError
from conftest import (
    block_files,
    signed_request_headers,
    start_cluster,
    start_configured,
    wait_until,
)

MIB = 1 << 20
PART_SIZES = [5 * MIB, 5 * MIB, MIB + 3]


def error_of(call: Callable, **params) -> tuple[int, str]:
    """(HTTP status, S3 error code) of a call that must fail."""
    with pytest.raises(ClientError) as caught:
        call(**params)
    response = caught.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def multipart_etag(parts: list[bytes]) -> str:
    md5s = b"".join(hashlib.md5(part).digest() for part in parts)
    return f'"{hashlib.md5(md5s).hexdigest()}-{len(parts)}"'


def quoted_md5(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def composite_crc32(parts: list[bytes]) -> str:
    digests = b"".join(zlib.crc32(part).to_bytes(4, "big") for part in parts)
    return f"{crc32_b64(digests)}-{len(parts)}"


@pytest.fixture(scope="module")
def client(server):
    return server.client()


@pytest.fixture
def key() -> str:
    return f"mpu/object-{os.urandom(4).hex()}"


def create(client, bucket: str, key: str, **params) -> str:
    return client.create_multipart_upload(Bucket=bucket, Key=key, **params)["UploadId"]


def upload_parts(client, bucket: str, key: str, upload_id: str, parts: dict[int, bytes]):
    """Upload each part; the CompleteMultipartUpload list for them, in part order."""
    completed = []
    for number, data in sorted(parts.items()):
        answer = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
        )
        assert answer["ETag"] == quoted_md5(data)
        completed.append({"PartNumber": number, "ETag": answer["ETag"]})
    return completed


def complete(client, bucket: str, key: str, upload_id: str, parts: list[dict], **params):
    return client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **params
    )


def read(client, bucket: str, key: str, **params) -> bytes:
    return client.get_object(Bucket=bucket, Key=key, **params)["Body"].read()


@pytest.fixture(scope="module")
def three_parts() -> list[bytes]:
    return [os.urandom(size) for size in PART_SIZES]


# ---- the whole path ----------------------------------------------------------


def test_upload_list_complete_and_read_back(client, bucket, key, three_parts):
    upload_id = create(client, bucket, key, ContentType="text/x-test", Metadata={"color": "blue"})
    parts = upload_parts(client, bucket, key, upload_id, dict(enumerate(three_parts, 1)))

    listed = client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
    assert listed["UploadId"] == upload_id
    assert listed["IsTruncated"] is False
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed["Parts"]] == [
        (number, quoted_md5(data), len(data)) for number, data in enumerate(three_parts, 1)
    ]

    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix="mpu/")["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [(key, upload_id)]

    done = complete(client, bucket, key, upload_id, parts)
    assert done["ETag"] == multipart_etag(three_parts)
    assert done["Key"] == key
    assert done["Bucket"] == bucket

    whole = b"".join(three_parts)
    got = client.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == whole
    assert got["ContentLength"] == len(whole)
    assert got["ETag"] == done["ETag"]
    assert got["ContentType"] == "text/x-test"
    assert got["Metadata"] == {"color": "blue"}
    listing = client.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"], o["ETag"]) for o in listing] == [(key, len(whole), done["ETag"])]
    assert "Uploads" not in client.list_multipart_uploads(Bucket=bucket)


def test_get_and_head_one_part(client, bucket, key, three_parts):
    upload_id = create(client, bucket, key)
    parts = upload_parts(client, bucket, key, upload_id, dict(enumerate(three_parts, 1)))
    etag = complete(client, bucket, key, upload_id, parts)["ETag"]

    second = client.get_object(Bucket=bucket, Key=key, PartNumber=2)
    assert second["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert second["Body"].read() == three_parts[1]
    assert second["PartsCount"] == 3
    assert second["ETag"] == etag
    assert second["ContentRange"] == f"bytes {5 * MIB}-{10 * MIB - 1}/{sum(PART_SIZES)}"

    last = client.head_object(Bucket=bucket, Key=key, PartNumber=3)
    assert last["ContentLength"] == MIB + 3
    assert last["PartsCount"] == 3
    assert last["ETag"] == etag
    assert read(client, bucket, key, PartNumber=1) == three_parts[0]

    status, code = error_of(client.get_object, Bucket=bucket, Key=key, PartNumber=4)
    assert status in (400, 416)
    assert code in ("InvalidPart", "InvalidPartNumber")


def test_list_parts_pagination(client, bucket, key):
    upload_id = create(client, bucket, key)
    bodies = {number: f"part {number}".encode() for number in (1, 2, 4, 7, 9)}
    upload_parts(client, bucket, key, upload_id, bodies)

    seen, marker, pages = [], 0, 0
    while True:
        page = client.list_parts(
            Bucket=bucket, Key=key, UploadId=upload_id, MaxParts=2, PartNumberMarker=marker
        )
        pages += 1
        numbers = [p["PartNumber"] for p in page["Parts"]]
        assert page["MaxParts"] == 2
        assert page["PartNumberMarker"] == marker
        assert len(numbers) <= 2
        seen += numbers
        if not page["IsTruncated"]:
            break
        assert len(numbers) == 2
        assert page["NextPartNumberMarker"] == numbers[-1]
        marker = page["NextPartNumberMarker"]
    assert seen == [1, 2, 4, 7, 9]
    assert pages == 3

    paginator = client.get_paginator("list_parts")
    by_paginator = paginator.paginate(
        Bucket=bucket, Key=key, UploadId=upload_id, PaginationConfig={"PageSize": 3}
    )
    assert [p["PartNumber"] for page in by_paginator for p in page["Parts"]] == seen
    client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)


def test_list_multipart_uploads_by_prefix(client, bucket):
    first = create(client, bucket, "photos/a.jpg")
    second = create(client, bucket, "photos/a.jpg")
    third = create(client, bucket, "photos/2024/b.jpg")
    other = create(client, bucket, "videos/c.mp4")

    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix="photos/")
    assert uploads["Prefix"] == "photos/"
    listed = [(u["Key"], u["UploadId"]) for u in uploads["Uploads"]]
    assert sorted(listed) == sorted(
        [("photos/a.jpg", first), ("photos/a.jpg", second), ("photos/2024/b.jpg", third)]
    )
    assert [k for k, _ in listed] == sorted(k for k, _ in listed)
    for upload in uploads["Uploads"]:
        assert upload["Initiated"].year >= 2024

    folded = client.list_multipart_uploads(Bucket=bucket, Prefix="photos/", Delimiter="/")
    assert [p["Prefix"] for p in folded["CommonPrefixes"]] == ["photos/2024/"]
    assert {u["UploadId"] for u in folded["Uploads"]} == {first, second}

    everything = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert {u["UploadId"] for u in everything} == {first, second, third, other}
    for key, upload_id in [*listed, ("videos/c.mp4", other)]:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    assert "Uploads" not in client.list_multipart_uploads(Bucket=bucket)


def test_list_multipart_uploads_pagination(client, bucket):
    created = {f"page/{i:02}": create(client, bucket, f"page/{i:02}") for i in range(7)}
    paginator = client.get_paginator("list_multipart_uploads")
    pages = list(paginator.paginate(Bucket=bucket, PaginationConfig={"PageSize": 3}))
    assert [len(page["Uploads"]) for page in pages] == [3, 3, 1]
    for page in pages[:-1]:
        assert page["IsTruncated"]
        assert page["NextKeyMarker"] == page["Uploads"][-1]["Key"]
    assert pages[-1]["IsTruncated"] is False
    listed = [(u["Key"], u["UploadId"]) for page in pages for u in page["Uploads"]]
    assert listed == sorted(created.items())
    for key, upload_id in created.items():
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)


# ---- choosing the parts ------------------------------------------------------


def test_reuploading_a_part_replaces_it(client, bucket, key):
    upload_id = create(client, bucket, key)
    old = upload_parts(client, bucket, key, upload_id, {1: b"old" * 1000})
    new = upload_parts(client, bucket, key, upload_id, {1: b"new body"})

    listed = client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed] == [
        (1, new[0]["ETag"], len(b"new body"))
    ]
    status, code = error_of(
        complete, client=client, bucket=bucket, key=key, upload_id=upload_id, parts=old
    )
    assert (status, code) == (400, "InvalidPart")

    complete(client, bucket, key, upload_id, new)
    assert read(client, bucket, key) == b"new body"


def test_completing_with_a_subset_of_parts(client, bucket, key, three_parts):
    upload_id = create(client, bucket, key)
    parts = upload_parts(client, bucket, key, upload_id, dict(enumerate(three_parts, 1)))
    chosen = [parts[0], parts[2]]

    done = complete(client, bucket, key, upload_id, chosen)
    assert done["ETag"] == multipart_etag([three_parts[0], three_parts[2]])
    assert read(client, bucket, key) == three_parts[0] + three_parts[2]
    assert client.head_object(Bucket=bucket, Key=key)["ContentLength"] == 6 * MIB + 3


def test_a_single_small_part_is_a_valid_upload(client, bucket, key):
    upload_id = create(client, bucket, key)
    parts = upload_parts(client, bucket, key, upload_id, {1: b"x"})
    done = complete(client, bucket, key, upload_id, parts)
    assert done["ETag"] == multipart_etag([b"x"])
    assert read(client, bucket, key) == b"x"
    assert client.head_object(Bucket=bucket, Key=key, PartNumber=1)["PartsCount"] == 1


@pytest.fixture
def small_parts(client, bucket, key) -> tuple[str, list[dict]]:
    """An upload with parts 1-3 of a few bytes each, and its completion list."""
    upload_id = create(client, bucket, key)
    parts = upload_parts(client, bucket, key, upload_id, {n: b"p%d" % n for n in (1, 2, 3)})
    return upload_id, parts


def complete_error(client, bucket, key, upload_id, parts) -> tuple[int, str]:
    return error_of(
        complete, client=client, bucket=bucket, key=key, upload_id=upload_id, parts=parts
    )


def test_parts_out_of_order(client, bucket, key, small_parts):
    upload_id, parts = small_parts
    reordered = [parts[1], parts[0], parts[2]]
    assert complete_error(client, bucket, key, upload_id, reordered) == (
        400,
        "InvalidPartOrder",
    )
    backwards = [parts[2], parts[2], parts[1]]
    assert complete_error(client, bucket, key, upload_id, backwards)[1] == "InvalidPartOrder"


def test_a_repeated_part_number_stands_for_its_last_entry(client, bucket, key, small_parts):
    """As in S3: a client that re-sent a part lists each answer it got; the last counts."""
    upload_id, parts = small_parts
    stale = {"PartNumber": 3, "ETag": quoted_md5(b"an earlier upload of part 3")}
    assert complete_error(client, bucket, key, upload_id, [parts[2], stale])[1] == "InvalidPart"
    complete(client, bucket, key, upload_id, [stale, parts[2], parts[2]])
    assert read(client, bucket, key) == b"p3"


def test_wrong_etag_or_missing_part(client, bucket, key, small_parts):
    upload_id, parts = small_parts
    wrong = [{"PartNumber": 1, "ETag": '"' + "f" * 32 + '"'}]
    assert complete_error(client, bucket, key, upload_id, wrong) == (400, "InvalidPart")
    missing = [*parts, {"PartNumber": 9999, "ETag": parts[0]["ETag"]}]
    assert complete_error(client, bucket, key, upload_id, missing) == (400, "InvalidPart")
    unquoted = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"].strip('"')} for p in parts]
    status, code = complete_error(client, bucket, key, upload_id, unquoted)
    assert (status, code) == (400, "EntityTooSmall")


def test_non_last_part_too_small(client, bucket, key, small_parts):
    upload_id, parts = small_parts
    assert complete_error(client, bucket, key, upload_id, parts) == (400, "EntityTooSmall")
    status, _ = error_of(client.head_object, Bucket=bucket, Key=key)
    assert status == 404
    # The upload is still there, and its last part alone is a valid object.
    complete(client, bucket, key, upload_id, [parts[2]])
    assert read(client, bucket, key) == b"p3"


def test_empty_part_list(client, bucket, key, small_parts):
    upload_id, _ = small_parts
    assert complete_error(client, bucket, key, upload_id, []) == (400, "MalformedXML")


# ---- abort and unknown uploads -------------------------------------------------


def test_abort_ends_the_upload(client, bucket, key):
    upload_id = create(client, bucket, key)
    parts = upload_parts(client, bucket, key, upload_id, {1: os.urandom(2 * MIB)})
    answer = client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 204

    assert no_such_upload(client, bucket, key, upload_id, parts)
    assert "Uploads" not in client.list_multipart_uploads(Bucket=bucket)
    assert "Contents" not in client.list_objects_v2(Bucket=bucket)
    assert error_of(client.head_object, Bucket=bucket, Key=key)[0] == 404


def no_such_upload(client, bucket: str, key: str, upload_id: str, parts: list[dict]) -> bool:
    """Every call naming `upload_id` answers 404 NoSuchUpload."""
    target = {"Bucket": bucket, "Key": key, "UploadId": upload_id}
    answers = [
        error_of(client.upload_part, PartNumber=2, Body=b"more", **target),
        error_of(client.list_parts, **target),
        error_of(client.complete_multipart_upload, MultipartUpload={"Parts": parts}, **target),
        error_of(client.abort_multipart_upload, **target),
    ]
    assert answers == [(404, "NoSuchUpload")] * len(answers)
    return True


@pytest.mark.parametrize(
    "upload_id",
    ["56788", "not-hex-at-all", "00" * 16, "zz" * 16, "%2F..%2F", "a" * 300],
)
def test_unknown_upload_id(client, bucket, key, upload_id):
    parts = [{"PartNumber": 1, "ETag": '"' + "0" * 32 + '"'}]
    assert no_such_upload(client, bucket, key, upload_id, parts)


def test_upload_id_of_another_key_or_bucket(client, bucket, key):
    upload_id = create(client, bucket, key)
    parts = upload_parts(client, bucket, key, upload_id, {1: b"data"})
    assert no_such_upload(client, bucket, key + "-other", upload_id, parts)
    other_bucket = f"{bucket}-other"
    client.create_bucket(Bucket=other_bucket)
    assert no_such_upload(client, other_bucket, key, upload_id, parts)
    complete(client, bucket, key, upload_id, parts)
    assert read(client, bucket, key) == b"data"


def test_completed_upload_is_gone(client, bucket, key):
    upload_id = create(client, bucket, key)
    parts = upload_parts(client, bucket, key, upload_id, {1: b"only"})
    complete(client, bucket, key, upload_id, parts)
    status, code = error_of(client.list_parts, Bucket=bucket, Key=key, UploadId=upload_id)
    assert (status, code) == (404, "NoSuchUpload")
    status, code = error_of(
        client.upload_part, Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=2, Body=b"x"
    )
    assert (status, code) == (404, "NoSuchUpload")


def test_bad_part_numbers(client, bucket, key):
    upload_id = create(client, bucket, key)
    for number in (0, 10001):
        status, code = error_of(
            client.upload_part,
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=b"x",
        )
        assert (status, code) == (400, "InvalidArgument")
    client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)


# ---- UploadPartCopy ------------------------------------------------------------


@pytest.fixture(scope="module")
def copy_sources(server, client) -> dict[str, bytes]:
    """A bucket with a small (inline), a 3 MiB + 5 and a 6 MiB + 7 byte source."""
    bucket = f"mpu-copy-sources-{os.getpid()}"
    client.create_bucket(Bucket=bucket)
    sources = {
        "small": os.urandom(100),
        "medium": os.urandom(3 * MIB + 5),
        "large": os.urandom(6 * MIB + 7),
    }
    for name, data in sources.items():
        client.put_object(Bucket=bucket, Key=name, Body=data)
    return {"bucket": bucket, **sources}


def copy_part(client, bucket, key, upload_id, number, source_bucket, source_key, byte_range=None):
    params = {
        "Bucket": bucket,
        "Key": key,
        "UploadId": upload_id,
        "PartNumber": number,
        "CopySource": {"Bucket": source_bucket, "Key": source_key},
    }
    if byte_range is not None:
        params["CopySourceRange"] = byte_range
    return client.upload_part_copy(**params)


def slice_of(data: bytes, byte_range: str) -> bytes:
    first, last = (int(x) for x in byte_range.removeprefix("bytes=").split("-"))
    return data[first : last + 1]


@pytest.mark.parametrize(
    ("source", "byte_range"),
    [
        ("medium", None),
        ("medium", "bytes=1000-2099999"),
        ("medium", f"bytes={MIB - 1}-{MIB}"),
        ("medium", "bytes=0-0"),
        ("medium", f"bytes={3 * MIB}-{3 * MIB + 4}"),
        ("small", None),
        ("small", "bytes=10-19"),
    ],
)
def test_copy_one_part(client, bucket, key, copy_sources, source, byte_range):
    data = copy_sources[source]
    expected = data if byte_range is None else slice_of(data, byte_range)
    upload_id = create(client, bucket, key)
    copied = copy_part(
        client, bucket, key, upload_id, 1, copy_sources["bucket"], source, byte_range
    )
    etag = copied["CopyPartResult"]["ETag"]
    assert etag == quoted_md5(expected)
    listed = client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
    assert [(p["ETag"], p["Size"]) for p in listed] == [(etag, len(expected))]
    done = complete(client, bucket, key, upload_id, [{"PartNumber": 1, "ETag": etag}])
    assert done["ETag"] == multipart_etag([expected])
    assert read(client, bucket, key) == expected


def test_copy_ranges_and_uploads_assemble_in_order(client, bucket, key, copy_sources):
    large, medium = copy_sources["large"], copy_sources["medium"]
    source_bucket = copy_sources["bucket"]
    middle_range = f"bytes=1000-{1000 + 5 * MIB + 4320}"
    upload_id = create(client, bucket, key)
    etags = [
        copy_part(client, bucket, key, upload_id, 1, source_bucket, "large"),
        copy_part(client, bucket, key, upload_id, 2, source_bucket, "large", middle_range),
        copy_part(client, bucket, key, upload_id, 4, source_bucket, "medium", "bytes=1000-2099999"),
    ]
    uploaded = upload_parts(client, bucket, key, upload_id, {3: b"U" * (5 * MIB)})
    parts = [
        {"PartNumber": 1, "ETag": etags[0]["CopyPartResult"]["ETag"]},
        {"PartNumber": 2, "ETag": etags[1]["CopyPartResult"]["ETag"]},
        uploaded[0],
        {"PartNumber": 4, "ETag": etags[2]["CopyPartResult"]["ETag"]},
    ]
    pieces = [
        large,
        slice_of(large, middle_range),
        b"U" * (5 * MIB),
        slice_of(medium, "bytes=1000-2099999"),
    ]
    done = complete(client, bucket, key, upload_id, parts)
    assert done["ETag"] == multipart_etag(pieces)
    assert read(client, bucket, key) == b"".join(pieces)
    assert read(client, bucket, key, PartNumber=2) == pieces[1]
    assert (
        read(client, bucket, key, Range="bytes=6291450-6291460")
        == b"".join(pieces)[6291450:6291461]
    )


def test_copy_ranges_of_a_multipart_source(client, bucket, key, three_parts):
    source_key = key + "-source"
    upload_id = create(client, bucket, source_key)
    parts = upload_parts(client, bucket, source_key, upload_id, dict(enumerate(three_parts, 1)))
    complete(client, bucket, source_key, upload_id, parts)
    whole = b"".join(three_parts)
    across_parts = f"bytes={5 * MIB - 10}-{10 * MIB + 10}"

    upload_id = create(client, bucket, key)
    first = copy_part(client, bucket, key, upload_id, 1, bucket, source_key, across_parts)
    second = copy_part(client, bucket, key, upload_id, 2, bucket, source_key)
    parts = [
        {"PartNumber": 1, "ETag": first["CopyPartResult"]["ETag"]},
        {"PartNumber": 2, "ETag": second["CopyPartResult"]["ETag"]},
    ]
    complete(client, bucket, key, upload_id, parts)
    assert read(client, bucket, key) == slice_of(whole, across_parts) + whole


def test_copy_object_of_a_multipart_object(client, bucket, key, three_parts):
    upload_id = create(client, bucket, key)
    parts = upload_parts(client, bucket, key, upload_id, dict(enumerate(three_parts, 1)))
    complete(client, bucket, key, upload_id, parts)
    client.copy_object(Bucket=bucket, Key=key + "-copy", CopySource={"Bucket": bucket, "Key": key})
    assert read(client, bucket, key + "-copy") == b"".join(three_parts)
    assert read(client, bucket, key + "-copy", PartNumber=3) == three_parts[2]


def test_copy_range_outside_the_source(client, bucket, key, copy_sources):
    upload_id = create(client, bucket, key)
    for byte_range in ("bytes=0-100", f"bytes=50-{3 * MIB + 5}"):
        source = "small" if byte_range == "bytes=0-100" else "medium"
        status, code = error_of(
            copy_part,
            client=client,
            bucket=bucket,
            key=key,
            upload_id=upload_id,
            number=1,
            source_bucket=copy_sources["bucket"],
            source_key=source,
            byte_range=byte_range,
        )
        assert status in (400, 416)
        assert code == "InvalidRange"
    assert client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", []) == []


@pytest.mark.parametrize(
    "byte_range", ["0-2", "bytes=0", "bytes=hello-world", "bytes=0-bar", "bytes=0-2,3-5"]
)
def test_copy_improper_range(client, bucket, key, copy_sources, byte_range):
    upload_id = create(client, bucket, key)
    status, code = error_of(
        copy_part,
        client=client,
        bucket=bucket,
        key=key,
        upload_id=upload_id,
        number=1,
        source_bucket=copy_sources["bucket"],
        source_key="medium",
        byte_range=byte_range,
    )
    assert (status, code) == (400, "InvalidArgument")


def test_copy_from_a_missing_source(client, bucket, key, copy_sources):
    upload_id = create(client, bucket, key)
    status, code = error_of(
        copy_part,
        client=client,
        bucket=bucket,
        key=key,
        upload_id=upload_id,
        number=1,
        source_bucket=copy_sources["bucket"],
        source_key="no-such-source",
    )
    assert (status, code) == (404, "NoSuchKey")


# ---- checksums -------------------------------------------------------------------


def test_crc32_parts_give_a_composite_checksum(client, bucket, key, three_parts):
    created = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32")
    assert created["ChecksumAlgorithm"] == "CRC32"
    upload_id = created["UploadId"]
    parts = []
    for number, data in enumerate(three_parts, 1):
        answer = client.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            ChecksumAlgorithm="CRC32",
        )
        assert answer["ChecksumCRC32"] == crc32_b64(data)
        parts.append(
            {"PartNumber": number, "ETag": answer["ETag"], "ChecksumCRC32": answer["ChecksumCRC32"]}
        )
    listed = client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
    assert [p["ChecksumCRC32"] for p in listed] == [crc32_b64(d) for d in three_parts]

    done = complete(client, bucket, key, upload_id, parts)
    expected = composite_crc32(three_parts)
    assert done["ChecksumCRC32"] == expected
    assert done["ChecksumCRC32"].endswith("-3")
    head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == expected
    assert read(client, bucket, key) == b"".join(three_parts)


def test_wrong_part_checksum_is_rejected(client, bucket, key):
    upload_id = create(client, bucket, key, ChecksumAlgorithm="CRC32")
    status, code = error_of(
        client.upload_part,
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        PartNumber=1,
        Body=b"payload",
        ChecksumCRC32=crc32_b64(b"something else"),
    )
    assert (status, code) == (400, "BadDigest")
    assert client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", []) == []


@pytest.mark.parametrize("part_algorithm", ["CRC32", None])
def test_part_checksum_must_use_the_upload_algorithm(client, bucket, key, part_algorithm):
    upload_id = create(client, bucket, key, ChecksumAlgorithm="SHA256")
    params = {"ChecksumAlgorithm": part_algorithm} if part_algorithm else {}
    status, code = error_of(
        client.upload_part,
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        PartNumber=1,
        Body=b"payload",
        **params,
    )
    assert (status, code) == (400, "InvalidRequest")
    assert client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", []) == []


def test_copied_parts_get_the_upload_checksum(client, bucket, key, copy_sources):
    medium = copy_sources["medium"]
    upload_id = create(client, bucket, key, ChecksumAlgorithm="CRC32")
    copied = copy_part(
        client, bucket, key, upload_id, 1, copy_sources["bucket"], "medium", "bytes=7-2000006"
    )["CopyPartResult"]
    piece = medium[7:2000007]
    assert copied["ChecksumCRC32"] == crc32_b64(piece)
    listed = client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
    assert listed[0]["ChecksumCRC32"] == crc32_b64(piece)
    part = {"PartNumber": 1, "ETag": copied["ETag"], "ChecksumCRC32": copied["ChecksumCRC32"]}
    done = complete(client, bucket, key, upload_id, [part])
    assert done["ChecksumCRC32"] == composite_crc32([piece])


# ---- uploads and plain objects under the same key ------------------------------------


def test_upload_in_progress_is_not_an_object(client, bucket, key):
    upload_id = create(client, bucket, key)
    upload_parts(client, bucket, key, upload_id, {1: b"hidden"})
    assert error_of(client.head_object, Bucket=bucket, Key=key)[0] == 404
    assert error_of(client.get_object, Bucket=bucket, Key=key) == (404, "NoSuchKey")
    assert error_of(client.get_object, Bucket=bucket, Key=key, PartNumber=1) == (404, "NoSuchKey")
    assert "Contents" not in client.list_objects_v2(Bucket=bucket)
    assert "Versions" not in client.list_object_versions(Bucket=bucket)
    client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)


def test_plain_put_during_upload_then_complete_wins(client, bucket, key, three_parts):
    client.put_object(Bucket=bucket, Key=key, Body=b"before")
    upload_id = create(client, bucket, key)
    parts = upload_parts(client, bucket, key, upload_id, dict(enumerate(three_parts, 1)))
    assert read(client, bucket, key) == b"before"

    client.put_object(Bucket=bucket, Key=key, Body=b"during")
    assert read(client, bucket, key) == b"during"
    assert client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]

    done = complete(client, bucket, key, upload_id, parts)
    assert read(client, bucket, key) == b"".join(three_parts)
    listing = client.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["ETag"]) for o in listing] == [(key, done["ETag"])]


def test_upload_settings_survive_a_plain_put_of_the_key(client, bucket, key):
    upload_id = create(
        client,
        bucket,
        key,
        ContentType="image/png",
        Metadata={"origin": "multipart"},
        ChecksumAlgorithm="CRC32",
    )
    answer = client.upload_part(
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        PartNumber=1,
        Body=b"png",
        ChecksumAlgorithm="CRC32",
    )
    client.put_object(Bucket=bucket, Key=key, Body=b"plain", ContentType="text/plain")
    part = {"PartNumber": 1, "ETag": answer["ETag"], "ChecksumCRC32": answer["ChecksumCRC32"]}
    done = complete(client, bucket, key, upload_id, [part])
    assert done["ChecksumCRC32"] == composite_crc32([b"png"])
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ContentType"] == "image/png"
    assert head["Metadata"] == {"origin": "multipart"}


def test_delete_during_upload_does_not_cancel_it(client, bucket, key):
    client.put_object(Bucket=bucket, Key=key, Body=b"before")
    upload_id = create(client, bucket, key)
    parts = upload_parts(client, bucket, key, upload_id, {1: b"after"})
    client.delete_object(Bucket=bucket, Key=key)
    assert error_of(client.head_object, Bucket=bucket, Key=key)[0] == 404
    assert client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
    complete(client, bucket, key, upload_id, parts)
    assert read(client, bucket, key) == b"after"


def test_upload_is_listed_until_completed_or_aborted(client, bucket, key):
    """A newer write of the key does not hide the upload from ListMultipartUploads."""
    upload_id = create(client, bucket, key)
    client.put_object(Bucket=bucket, Key=key, Body=b"during")
    client.delete_object(Bucket=bucket, Key=key)
    client.put_object(Bucket=bucket, Key=key, Body=b"after")
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [(key, upload_id)]
    parts = upload_parts(client, bucket, key, upload_id, {1: b"multipart"})
    complete(client, bucket, key, upload_id, parts)
    assert "Uploads" not in client.list_multipart_uploads(Bucket=bucket)
    assert read(client, bucket, key) == b"multipart"


def test_newer_plain_put_after_complete_wins(client, bucket, key):
    upload_id = create(client, bucket, key)
    parts = upload_parts(client, bucket, key, upload_id, {1: b"multipart"})
    complete(client, bucket, key, upload_id, parts)
    client.put_object(Bucket=bucket, Key=key, Body=b"plain")
    assert read(client, bucket, key) == b"plain"
    assert client.head_object(Bucket=bucket, Key=key)["ETag"] == quoted_md5(b"plain")


# ---- uploads hidden by a write of their key, re-uploaded parts: nothing leaks ------


def test_an_overwritten_key_does_not_hide_its_upload_nor_leak_its_parts(own_server):
    """The upload stays listed after a PUT of its key; aborting it frees its part's blocks."""
    s3 = start_configured(own_server, block_gc_delay_secs=0)
    s3.create_bucket(Bucket="hidden")
    upload_id = create(s3, "hidden", "k")
    upload_parts(s3, "hidden", "k", upload_id, {1: os.urandom(6 * MIB)})
    s3.put_object(Bucket="hidden", Key="k", Body=b"plain")
    uploads = s3.list_multipart_uploads(Bucket="hidden").get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("k", upload_id)]

    s3.delete_object(Bucket="hidden", Key="k")
    assert block_files(own_server.data_dir)
    s3.abort_multipart_upload(Bucket="hidden", Key="k", UploadId=upload_id)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket="hidden")
    s3.delete_bucket(Bucket="hidden")
    wait_until(lambda: not block_files(own_server.data_dir), what="the part's blocks collected")


def test_deleting_a_bucket_ends_its_uploads_and_frees_their_parts(own_server):
    """As in S3, uploads in progress do not keep a bucket from being deleted: they
    go with it, and their parts' blocks are collected (0.3 kept them forever)."""
    s3 = start_configured(own_server, block_gc_delay_secs=0)
    s3.create_bucket(Bucket="leaving")
    upload_id = create(s3, "leaving", "k")
    upload_parts(s3, "leaving", "k", upload_id, {1: os.urandom(6 * MIB)})
    s3.put_object(Bucket="leaving", Key="k", Body=b"plain")
    s3.delete_object(Bucket="leaving", Key="k")
    s3.delete_bucket(Bucket="leaving")
    wait_until(lambda: not block_files(own_server.data_dir), what="the part's blocks collected")
    s3.create_bucket(Bucket="leaving")
    assert "Uploads" not in s3.list_multipart_uploads(Bucket="leaving")
    assert error_of(s3.list_parts, Bucket="leaving", Key="k", UploadId=upload_id) == (
        404,
        "NoSuchUpload",
    )


def test_a_reuploaded_part_releases_the_previous_upload(own_server):
    s3 = start_configured(own_server, block_gc_delay_secs=0)
    s3.create_bucket(Bucket="again")
    upload_id = create(s3, "again", "k")
    upload_parts(s3, "again", "k", upload_id, {1: os.urandom(6 * MIB)})
    one_part = len(block_files(own_server.data_dir))
    for _ in range(3):
        last = os.urandom(6 * MIB)
        parts = upload_parts(s3, "again", "k", upload_id, {1: last})
    wait_until(
        lambda: len(block_files(own_server.data_dir)) == one_part,
        what="the replaced uploads' blocks collected",
    )
    listed = s3.list_parts(Bucket="again", Key="k", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["ETag"]) for p in listed] == [(1, parts[0]["ETag"])]
    complete(s3, "again", "k", upload_id, parts)
    assert read(s3, "again", "k") == last


# ---- a part re-sent while its first upload still runs ------------------------------


def start_part_upload(server, bucket, key, upload_id, body: bytes, sent: int):
    """Start an UploadPart of part 1 that sends the first `sent` bytes of `body` only."""
    path = f"/{bucket}/{key}?partNumber=1&uploadId={upload_id}"
    headers = signed_request_headers("PUT", f"{server.endpoint}{path}", body=body)
    connection = http.client.HTTPConnection("127.0.0.1", server.s3_port, timeout=30)
    connection.putrequest("PUT", path, skip_host=True, skip_accept_encoding=True)
    for name, value in {**headers, "Content-Length": str(len(body))}.items():
        connection.putheader(name, value)
    connection.endheaders()
    connection.send(body[:sent])
    return connection


def test_the_part_upload_that_finishes_last_wins(server, client, bucket, key):
    """The first upload of part 1 starts, the resent one starts and finishes, then the
    first finishes: it is part 1 (its data, its ETag), as in S3."""
    upload_id = create(client, bucket, key)
    first_body, resent_body = b"A" * 8, b"B" * 8
    first = start_part_upload(server, bucket, key, upload_id, first_body, 4)
    resent = upload_parts(client, bucket, key, upload_id, {1: resent_body})
    first.send(first_body[4:])
    answer = first.getresponse()
    assert answer.status == 200, answer.read()
    first_etag = answer.getheader("etag")
    first.close()
    assert first_etag == quoted_md5(first_body)

    listed = client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
    assert [p["ETag"] for p in listed] == [first_etag]
    parts = [resent[0], {"PartNumber": 1, "ETag": first_etag}]
    complete(client, bucket, key, upload_id, parts)
    assert read(client, bucket, key) == first_body


class BodyWithHook:
    """A file-like body (s3-tests' FakeWriteFile): each read that delivers its last
    bytes calls `hook` first, so the last read of the upload's send waits for it."""

    def __init__(self, data: bytes, hook: Callable[[], None] = lambda: None) -> None:
        self.data = data
        self.offset = 0
        self.hook = hook

    def read(self, size: int | None = -1) -> bytes:
        end = len(self.data) if size is None or size < 0 else self.offset + size
        chunk = self.data[self.offset : end]
        self.offset += len(chunk)
        if chunk and self.offset == len(self.data):
            self.hook()
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        self.offset = {0: offset, 1: self.offset + offset, 2: len(self.data) + offset}[whence]
        return self.offset

    def tell(self) -> int:
        return self.offset


def test_multipart_resend_first_finishes_last(client, bucket):
    """ceph s3-tests test_multipart_resend_first_finishes_last, with boto3 as there:
    part 1 is re-sent from inside the last read of its first upload's body."""
    key = "mymultipart"
    upload_id = create(client, bucket, key)
    reads: list[int] = []
    dry_run = BodyWithHook(b"C" * 8, lambda: reads.append(1))
    answer = client.upload_part(
        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=dry_run
    )
    complete(client, bucket, key, upload_id, [{"ETag": answer["ETag"], "PartNumber": 1}])
    client.delete_object(Bucket=bucket, Key=key)

    parts: list[dict] = []
    upload_id = create(client, bucket, key)
    seen = []

    def on_read() -> None:
        seen.append(1)
        if len(seen) != len(reads):
            return
        resent = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=BodyWithHook(b"B" * 8)
        )
        parts.append({"ETag": resent["ETag"], "PartNumber": 1})

    first = BodyWithHook(b"A" * 8, on_read)
    answer = client.upload_part(
        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=first
    )
    parts.append({"ETag": answer["ETag"], "PartNumber": 1})
    assert len(parts) == 2
    complete(client, bucket, key, upload_id, parts)
    assert read(client, bucket, key) == b"A" * 8


# ---- listing many uploads of one key --------------------------------------------------


def test_uploads_of_one_key_page_by_upload_id_marker(client, bucket, key):
    created = [create(client, bucket, key) for _ in range(5)]
    other = create(client, bucket, key + "/after")
    paginator = client.get_paginator("list_multipart_uploads")
    pages = list(paginator.paginate(Bucket=bucket, PaginationConfig={"PageSize": 2}))
    assert [len(page["Uploads"]) for page in pages] == [2, 2, 2]
    for page in pages[:-1]:
        assert page["IsTruncated"]
        assert page["NextKeyMarker"] == page["Uploads"][-1]["Key"]
        assert page["NextUploadIdMarker"] == page["Uploads"][-1]["UploadId"]
    listed = [(u["Key"], u["UploadId"]) for page in pages for u in page["Uploads"]]
    assert listed == [*((key, u) for u in created), (key + "/after", other)]
    after_key = client.list_multipart_uploads(Bucket=bucket, KeyMarker=key)
    assert [u["UploadId"] for u in after_key["Uploads"]] == [other]
    for upload_key, upload_id in listed:
        client.abort_multipart_upload(Bucket=bucket, Key=upload_key, UploadId=upload_id)


def test_uploads_are_listed_and_end_with_their_bucket_on_every_node(tmp_path):
    """The upload index is a replicated table like the others."""
    cluster = start_cluster(tmp_path, 3, ["dc1", "dc2", "dc3"])
    try:
        clients = [node.client() for node in cluster.nodes]
        clients[0].create_bucket(Bucket="shared")
        upload_id = create(clients[0], "shared", "k")
        clients[1].put_object(Bucket="shared", Key="k", Body=b"plain")
        for client in clients:
            uploads = client.list_multipart_uploads(Bucket="shared")["Uploads"]
            assert [u["UploadId"] for u in uploads] == [upload_id]
        clients[1].delete_object(Bucket="shared", Key="k")
        clients[2].delete_bucket(Bucket="shared")
        for client in clients:
            assert error_of(client.list_parts, Bucket="shared", Key="k", UploadId=upload_id)[1] in (
                "NoSuchBucket",
                "NoSuchUpload",
            )
    finally:
        cluster.stop()
