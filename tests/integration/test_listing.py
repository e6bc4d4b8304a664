"""ListObjects (v1, v2) and ListObjectVersions against a real server, with boto3."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

NESTED_KEYS = [f"dir{i % 7}/sub{i % 3}/file{i}" for i in range(2440)]
# '.' and '-' sort before '/', so these fall between and around the folded dirN/ prefixes.
TOP_LEVEL_KEYS = [f"top-{i:03}" for i in range(50)] + [f"dir{d}.txt" for d in range(7)]
TOP_LEVEL_KEYS += ["dir3-x", "a", "zz"]
ALL_KEYS = NESTED_KEYS + TOP_LEVEL_KEYS
UPLOAD_THREADS = 16


def byte_order(keys: Iterable[str]) -> list[str]:
    return sorted(keys, key=str.encode)


def put_many(client, bucket: str, bodies: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        done = pool.map(
            lambda item: client.put_object(Bucket=bucket, Key=item[0], Body=item[1]),
            bodies.items(),
        )
        for _ in done:
            pass


def expected_listing(keys: Iterable[str], prefix: str = "", delimiter: str | None = None):
    """(keys, common prefixes) a listing of `keys` returns, each in byte order."""
    contents, prefixes = [], set()
    for key in keys:
        if not key.startswith(prefix):
            continue
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        if cut < 0:
            contents.append(key)
        else:
            prefixes.add(key[: cut + len(delimiter)])
    return byte_order(contents), byte_order(prefixes)


def error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


@pytest.fixture(scope="module")
def client(server):
    return server.client(max_pool_connections=UPLOAD_THREADS)


@pytest.fixture(scope="module")
def big_bucket(client) -> str:
    """A bucket holding ALL_KEYS, each body being its own key."""
    name = f"listing-big-{os.getpid()}"
    client.create_bucket(Bucket=name)
    put_many(client, name, {key: key.encode() for key in ALL_KEYS})
    return name


def new_bucket(client, label: str) -> str:
    name = f"listing-{label}-{os.getpid()}"
    client.create_bucket(Bucket=name)
    return name


# ---- ListObjectsV2 -----------------------------------------------------------


def v2_pages(client, bucket: str, page_size: int, **params) -> list[dict]:
    paginator = client.get_paginator("list_objects_v2")
    config = {"PageSize": page_size}
    return list(paginator.paginate(Bucket=bucket, PaginationConfig=config, **params))


def check_v2_page_shape(pages: list[dict], page_size: int) -> None:
    for index, page in enumerate(pages):
        last = index == len(pages) - 1
        count = len(page.get("Contents", [])) + len(page.get("CommonPrefixes", []))
        assert page["KeyCount"] == count
        assert page["MaxKeys"] == page_size
        assert page["IsTruncated"] is not last
        assert ("NextContinuationToken" in page) is not last
        if not last:
            assert count == page_size
        if index > 0:
            assert page["ContinuationToken"] == pages[index - 1]["NextContinuationToken"]


def collect(pages: list[dict]) -> tuple[list[str], list[str]]:
    keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    prefixes = [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])]
    return keys, prefixes


def test_v2_lists_every_key_once_in_byte_order(client, big_bucket):
    pages = v2_pages(client, big_bucket, 1000)
    assert len(pages) == 3
    check_v2_page_shape(pages, 1000)
    keys, prefixes = collect(pages)
    assert keys == byte_order(ALL_KEYS)
    assert prefixes == []


def test_v2_contents_carry_size_etag_and_date(client, big_bucket):
    page = client.list_objects_v2(Bucket=big_bucket, Prefix="dir4/sub1/", MaxKeys=5)
    assert len(page["Contents"]) == 5
    for obj in page["Contents"]:
        body = obj["Key"].encode()
        assert obj["Size"] == len(body)
        assert obj["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
        assert obj["StorageClass"] == "STANDARD"
        assert obj["LastModified"].year >= 2024
        assert "Owner" not in obj


def test_v2_small_pages_over_a_prefix(client, big_bucket):
    pages = v2_pages(client, big_bucket, 7, Prefix="dir3/sub1/")
    check_v2_page_shape(pages, 7)
    keys, _ = collect(pages)
    expected, _ = expected_listing(ALL_KEYS, "dir3/sub1/")
    assert len(expected) > 100
    assert keys == expected
    assert all(page["Prefix"] == "dir3/sub1/" for page in pages)


@pytest.mark.parametrize("page_size", [1000, 3])
def test_v2_delimiter_folds_directories(client, big_bucket, page_size):
    pages = v2_pages(client, big_bucket, page_size, Delimiter="/")
    check_v2_page_shape(pages, page_size)
    keys, prefixes = collect(pages)
    expected_keys, expected_prefixes = expected_listing(ALL_KEYS, delimiter="/")
    assert prefixes == [f"dir{d}/" for d in range(7)] == expected_prefixes
    assert keys == expected_keys == byte_order(TOP_LEVEL_KEYS)
    assert all(page["Delimiter"] == "/" for page in pages)


@pytest.mark.parametrize("page_size", [1000, 2])
def test_v2_prefix_and_delimiter(client, big_bucket, page_size):
    pages = v2_pages(client, big_bucket, page_size, Prefix="dir2/", Delimiter="/")
    check_v2_page_shape(pages, page_size)
    keys, prefixes = collect(pages)
    assert keys == []
    assert prefixes == ["dir2/sub0/", "dir2/sub1/", "dir2/sub2/"]


def test_v2_prefix_without_trailing_delimiter(client, big_bucket):
    pages = v2_pages(client, big_bucket, 1000, Prefix="dir3", Delimiter="/")
    keys, prefixes = collect(pages)
    assert keys == ["dir3-x", "dir3.txt"]
    assert prefixes == ["dir3/"]


def test_v2_start_after(client, big_bucket):
    ordered = byte_order(ALL_KEYS)
    start_after = ordered[1234]
    pages = v2_pages(client, big_bucket, 1000, StartAfter=start_after)
    check_v2_page_shape(pages, 1000)
    keys, _ = collect(pages)
    assert keys == ordered[1235:]
    assert all(page["StartAfter"] == start_after for page in pages)


def test_v2_start_after_inside_a_folded_directory(client, big_bucket):
    # Whether the folder holding StartAfter ("dir3/") is returned is left open here.
    pages = v2_pages(client, big_bucket, 1000, Delimiter="/", StartAfter="dir3/sub1/file1000")
    keys, prefixes = collect(pages)
    assert [p for p in prefixes if p != "dir3/"] == ["dir4/", "dir5/", "dir6/"]
    assert keys == [k for k in byte_order(TOP_LEVEL_KEYS) if k > "dir3/"]


def test_v2_start_after_past_the_end(client, big_bucket):
    page = client.list_objects_v2(Bucket=big_bucket, StartAfter="zzz")
    assert page["KeyCount"] == 0
    assert not page["IsTruncated"]
    assert "Contents" not in page


def test_v2_max_keys_zero(client, big_bucket):
    page = client.list_objects_v2(Bucket=big_bucket, MaxKeys=0)
    assert page["KeyCount"] == 0
    assert page["MaxKeys"] == 0
    assert page["IsTruncated"] is False
    assert "Contents" not in page
    assert "NextContinuationToken" not in page


def test_v2_max_keys_is_capped_at_1000(client, big_bucket):
    page = client.list_objects_v2(Bucket=big_bucket, MaxKeys=5000)
    assert page["KeyCount"] == 1000
    assert page["IsTruncated"]


def test_v2_fetch_owner(client, big_bucket):
    plain = client.list_objects_v2(Bucket=big_bucket, MaxKeys=3)
    assert all("Owner" not in obj for obj in plain["Contents"])
    owned = client.list_objects_v2(Bucket=big_bucket, MaxKeys=3, FetchOwner=True)
    assert [obj["Key"] for obj in owned["Contents"]] == [obj["Key"] for obj in plain["Contents"]]
    for obj in owned["Contents"]:
        assert obj["Owner"]["ID"]


def test_v2_garbage_continuation_token(client, big_bucket):
    with pytest.raises(ClientError) as caught:
        client.list_objects_v2(Bucket=big_bucket, ContinuationToken="%%%not-base64")
    assert error_code(caught.value) == "InvalidArgument"


def test_listing_a_missing_bucket(client):
    with pytest.raises(ClientError) as caught:
        client.list_objects_v2(Bucket=f"no-such-bucket-{os.getpid()}")
    assert error_code(caught.value) == "NoSuchBucket"


# ---- ListObjects (v1) --------------------------------------------------------


def v1_pages(client, bucket: str, page_size: int, **params) -> list[dict]:
    paginator = client.get_paginator("list_objects")
    config = {"PageSize": page_size}
    return list(paginator.paginate(Bucket=bucket, PaginationConfig=config, **params))


def check_v1_page_shape(pages: list[dict], page_size: int, *, delimiter: bool) -> None:
    for index, page in enumerate(pages):
        last = index == len(pages) - 1
        keys = [obj["Key"] for obj in page.get("Contents", [])]
        prefixes = [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        assert page["IsTruncated"] is not last
        assert page["MaxKeys"] == page_size
        if not last:
            assert len(keys) + len(prefixes) == page_size
        # NextMarker only comes with a delimiter; without one, clients use the last key.
        assert ("NextMarker" in page) is (delimiter and not last)
        if delimiter and not last:
            assert page["NextMarker"] == byte_order(keys + prefixes)[-1]
        if index > 0:
            previous = pages[index - 1]
            marker = previous.get("NextMarker") or previous["Contents"][-1]["Key"]
            assert page["Marker"] == marker


def test_v1_lists_every_key_once_in_byte_order(client, big_bucket):
    pages = v1_pages(client, big_bucket, 1000)
    assert len(pages) == 3
    check_v1_page_shape(pages, 1000, delimiter=False)
    keys, _ = collect(pages)
    assert keys == byte_order(ALL_KEYS)
    assert all(obj["Owner"]["ID"] for obj in pages[0]["Contents"])


def test_v1_small_pages_over_a_prefix(client, big_bucket):
    pages = v1_pages(client, big_bucket, 7, Prefix="dir5/sub2/")
    check_v1_page_shape(pages, 7, delimiter=False)
    keys, _ = collect(pages)
    assert keys == expected_listing(ALL_KEYS, "dir5/sub2/")[0]


@pytest.mark.parametrize("page_size", [1000, 4])
def test_v1_delimiter(client, big_bucket, page_size):
    pages = v1_pages(client, big_bucket, page_size, Delimiter="/")
    check_v1_page_shape(pages, page_size, delimiter=True)
    keys, prefixes = collect(pages)
    expected_keys, expected_prefixes = expected_listing(ALL_KEYS, delimiter="/")
    assert keys == expected_keys
    assert prefixes == expected_prefixes


def test_v1_prefix_delimiter_small_pages(client, big_bucket):
    pages = v1_pages(client, big_bucket, 1, Prefix="dir6/", Delimiter="/")
    check_v1_page_shape(pages, 1, delimiter=True)
    keys, prefixes = collect(pages)
    assert keys == []
    assert prefixes == ["dir6/sub0/", "dir6/sub1/", "dir6/sub2/"]
    assert len(pages) == 3


def test_v1_marker(client, big_bucket):
    ordered = byte_order(ALL_KEYS)
    page = client.list_objects(Bucket=big_bucket, Marker=ordered[2000], MaxKeys=1000)
    assert page["Marker"] == ordered[2000]
    assert [obj["Key"] for obj in page["Contents"]] == ordered[2001:]
    assert page["IsTruncated"] is False


def test_v1_max_keys_zero(client, big_bucket):
    page = client.list_objects(Bucket=big_bucket, MaxKeys=0)
    assert page["IsTruncated"] is False
    assert "Contents" not in page


def test_negative_max_keys_is_rejected(client, big_bucket):
    with pytest.raises(ClientError) as caught:
        client.list_objects(Bucket=big_bucket, MaxKeys=-1)
    assert error_code(caught.value) == "InvalidArgument"


# ---- ListObjectVersions on an unversioned bucket -----------------------------


@pytest.mark.parametrize("page_size", [1000, 250])
def test_versions_of_an_unversioned_bucket(client, big_bucket, page_size):
    paginator = client.get_paginator("list_object_versions")
    pages = list(paginator.paginate(Bucket=big_bucket, PaginationConfig={"PageSize": page_size}))
    assert len(pages) == -(-len(ALL_KEYS) // page_size)
    versions = [v for page in pages for v in page.get("Versions", [])]
    assert [v["Key"] for v in versions] == byte_order(ALL_KEYS)
    assert all(v["VersionId"] == "null" and v["IsLatest"] for v in versions)
    assert all(v["Size"] == len(v["Key"].encode()) for v in versions)
    assert all("DeleteMarkers" not in page for page in pages)
    for index, page in enumerate(pages):
        last = index == len(pages) - 1
        assert page["IsTruncated"] is not last
        assert page["MaxKeys"] == page_size
        if not last:
            assert page["NextKeyMarker"] == page["Versions"][-1]["Key"]
            assert pages[index + 1]["KeyMarker"] == page["NextKeyMarker"]
        else:
            assert "NextKeyMarker" not in page


def test_versions_with_prefix_and_delimiter(client, big_bucket):
    page = client.list_object_versions(Bucket=big_bucket, Prefix="dir1/", Delimiter="/")
    assert "Versions" not in page
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == [
        "dir1/sub0/",
        "dir1/sub1/",
        "dir1/sub2/",
    ]


# ---- EncodingType=url --------------------------------------------------------

ENCODED_KEYS = {
    "foo+1/bar": "foo%2B1/bar",
    "foo/bar/xyzzy": "foo/bar/xyzzy",
    "quux ab/thud": "quux%20ab/thud",
    "asdf+b": "asdf%2Bb",
    "100%": "100%25",
    "ünï/cödé": "%C3%BCn%C3%AF/c%C3%B6d%C3%A9",
    "ctl\x01char": "ctl%01char",
    "amp&lt<gt>": "amp%26lt%3Cgt%3E",
}


@pytest.fixture(scope="module")
def encoded_bucket(client) -> str:
    name = new_bucket(client, "encoding")
    put_many(client, name, {key: b"x" for key in ENCODED_KEYS})
    return name


def test_keys_round_trip_without_explicit_encoding(client, encoded_bucket):
    # botocore asks for url encoding itself and decodes the answer.
    keys, _ = collect([client.list_objects_v2(Bucket=encoded_bucket)])
    assert keys == byte_order(ENCODED_KEYS)
    keys, _ = collect([client.list_objects(Bucket=encoded_bucket)])
    assert keys == byte_order(ENCODED_KEYS)


def test_v2_url_encoding_with_delimiter(client, encoded_bucket):
    # With EncodingType set by the caller, botocore leaves the values encoded.
    page = client.list_objects_v2(Bucket=encoded_bucket, Delimiter="/", EncodingType="url")
    assert page["EncodingType"] == "url"
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == [
        "foo%2B1/",
        "foo/",
        "quux%20ab/",
        "%C3%BCn%C3%AF/",
    ]
    assert [obj["Key"] for obj in page["Contents"]] == [
        "100%25",
        "amp%26lt%3Cgt%3E",
        "asdf%2Bb",
        "ctl%01char",
    ]


def test_v2_url_encoding_of_every_key(client, encoded_bucket):
    page = client.list_objects_v2(Bucket=encoded_bucket, EncodingType="url")
    by_raw = {raw: encoded for raw, encoded in ENCODED_KEYS.items()}
    assert [obj["Key"] for obj in page["Contents"]] == [
        by_raw[key] for key in byte_order(ENCODED_KEYS)
    ]


def test_v2_url_encoding_of_prefix_and_start_after(client, encoded_bucket):
    page = client.list_objects_v2(
        Bucket=encoded_bucket, Prefix="quux ", StartAfter="quux a", EncodingType="url"
    )
    assert page["Prefix"] == "quux%20"
    assert page["StartAfter"] == "quux%20a"
    assert [obj["Key"] for obj in page["Contents"]] == ["quux%20ab/thud"]


def test_v1_url_encoding(client, encoded_bucket):
    page = client.list_objects(
        Bucket=encoded_bucket, Delimiter="/", EncodingType="url", Prefix="foo"
    )
    assert page["EncodingType"] == "url"
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["foo%2B1/", "foo/"]


def test_versions_url_encoding(client, encoded_bucket):
    page = client.list_object_versions(Bucket=encoded_bucket, EncodingType="url", Prefix="asdf")
    assert [v["Key"] for v in page["Versions"]] == ["asdf%2Bb"]


def test_unknown_encoding_type_is_rejected(server, encoded_bucket):
    client = server.client()
    client.meta.events.register(
        "before-parameter-build.s3.ListObjectsV2",
        lambda params, **_: params.__setitem__("EncodingType", "base64"),
    )
    with pytest.raises(ClientError) as caught:
        client.list_objects_v2(Bucket=encoded_bucket)
    assert error_code(caught.value) == "InvalidArgument"


# ---- long keys (stored as an inline prefix plus a hash) ----------------------

LONG_STEM = "long/" + "s" * 600


def long_keys() -> list[str]:
    """1024-byte keys and shorter ones that share a 600-byte stem, differing late."""
    keys = []
    for tail in ["a", "b", "m", "z", "0", "~", "é"]:
        keys.append(LONG_STEM + tail + "x" * (1024 - len(LONG_STEM) - len(tail.encode())))
        keys.append(LONG_STEM + tail)
        keys.append(LONG_STEM + tail + "/child")
    for position in (10, 300, 447, 448, 449, 500):
        stem = "long/" + "s" * position
        keys.append(stem + "t" + "y" * (1024 - len(stem) - 1))
    keys.append("long/" + "s" * 443)  # exactly 448 bytes: sorts before every longer stem key
    assert all(len(key.encode()) <= 1024 for key in keys)
    return keys


@pytest.fixture(scope="module")
def long_bucket(client) -> str:
    name = new_bucket(client, "long")
    put_many(client, name, {key: hashlib.sha256(key.encode()).digest() for key in long_keys()})
    return name


@pytest.mark.parametrize("page_size", [1000, 3])
def test_long_keys_list_in_order(client, long_bucket, page_size):
    pages = v2_pages(client, long_bucket, page_size)
    check_v2_page_shape(pages, page_size)
    keys, _ = collect(pages)
    assert keys == byte_order(long_keys())


def test_long_keys_start_after_inside_a_shared_stem(client, long_bucket):
    ordered = byte_order(long_keys())
    stem_keys = [k for k in ordered if k.startswith(LONG_STEM)]
    start_after = stem_keys[5]
    pages = v2_pages(client, long_bucket, 2, StartAfter=start_after)
    keys, _ = collect(pages)
    assert keys == [k for k in ordered if k > start_after]


def test_long_keys_with_prefix_and_delimiter(client, long_bucket):
    pages = v1_pages(client, long_bucket, 2, Prefix=LONG_STEM, Delimiter="/")
    keys, prefixes = collect(pages)
    expected_keys, expected_prefixes = expected_listing(long_keys(), LONG_STEM, "/")
    assert keys == expected_keys
    assert prefixes == expected_prefixes
    assert len(prefixes) == 7


def test_long_keys_read_back(client, long_bucket):
    for key in long_keys()[:6]:
        body = client.get_object(Bucket=long_bucket, Key=key)["Body"].read()
        assert body == hashlib.sha256(key.encode()).digest()


# ---- deletes and overwrites --------------------------------------------------


def test_deleted_keys_disappear_and_overwritten_keys_appear_once(client):
    name = new_bucket(client, "churn")
    keys = [f"churn/{i:03}" for i in range(60)]
    put_many(client, name, {key: b"first" for key in keys})
    deleted = keys[::3]
    overwritten = {key: os.urandom(5000) for key in keys[1::4] if key not in deleted}
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(lambda key: client.delete_object(Bucket=name, Key=key), deleted))
    put_many(client, name, overwritten)
    survivors = [key for key in keys if key not in deleted]

    for page_size in (1000, 7):
        listed = [
            obj for page in v2_pages(client, name, page_size) for obj in page.get("Contents", [])
        ]
        assert [obj["Key"] for obj in listed] == survivors
        for obj in listed:
            body = overwritten.get(obj["Key"], b"first")
            assert obj["Size"] == len(body)
            assert obj["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    v1_keys, _ = collect(v1_pages(client, name, 5))
    assert v1_keys == survivors
    versions = client.list_object_versions(Bucket=name)
    assert [v["Key"] for v in versions["Versions"]] == survivors
    assert "DeleteMarkers" not in versions


def test_a_directory_emptied_by_deletes_is_no_common_prefix(client):
    name = new_bucket(client, "emptied")
    put_many(client, name, {"gone/a": b"1", "gone/b": b"2", "kept/c": b"3", "top": b"4"})
    client.delete_objects(Bucket=name, Delete={"Objects": [{"Key": "gone/a"}, {"Key": "gone/b"}]})
    page = client.list_objects_v2(Bucket=name, Delimiter="/")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["kept/"]
    assert [obj["Key"] for obj in page["Contents"]] == ["top"]
    assert page["KeyCount"] == 2
