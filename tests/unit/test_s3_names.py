import pytest

from granary.api.s3.errors import S3Error
from granary.api.s3.names import parse_user_metadata, validate_bucket_name, validate_object_key


@pytest.mark.parametrize(
    "name",
    [
        "abc",
        "a" * 63,
        "my-bucket.example.com",
        "0bucket",
        "bucket9",
        "a.b-c",
        "1.2.3",
        "1.2.3.4.5",
        "s3-alias-not-suffix",
        "my-s3alias-bucket",
    ],
)
def test_valid_bucket_names(name):
    validate_bucket_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a",
        "aa",
        "a" * 64,
        "_bucket",
        "foo_bar",
        "Bucket",
        "foo-",
        "-foo",
        ".foo",
        "foo.",
        "foo..bar",
        "foo.-bar",
        "foo-.bar",
        "192.168.5.123",
        "1.2.3.4",
        "xn--bucket",
        "bucket-s3alias",
        "bucket--ol-s3",
        "bucket.mrap",
        "bucket--usw2-az1--x-s3",
        "buck et",
        "bücket",
        "bucket/",
    ],
)
def test_invalid_bucket_names(name):
    with pytest.raises(S3Error) as raised:
        validate_bucket_name(name)
    assert raised.value.code == "InvalidBucketName"
    assert raised.value.status == 400
    assert raised.value.extra == {"BucketName": name}


@pytest.mark.parametrize("key", ["a", "\n", "a\x01b", "dir/", " ", "é" * 512, "x" * 1024])
def test_valid_object_keys(key):
    validate_object_key(key)


def test_key_too_long_counts_utf8_bytes():
    with pytest.raises(S3Error) as raised:
        validate_object_key("é" * 512 + "x")
    assert raised.value.code == "KeyTooLongError"
    assert raised.value.extra == {"Size": "1025", "MaxSizeAllowed": "1024"}
    with pytest.raises(S3Error):
        validate_object_key("x" * 1025)


@pytest.mark.parametrize("key", ["", "a\udc80"])
def test_unusable_object_keys(key):
    with pytest.raises(S3Error) as raised:
        validate_object_key(key)
    assert raised.value.code == "InvalidArgument"


def test_parse_user_metadata():
    headers = {
        "content-type": "text/plain",
        "X-Amz-Meta-Color": "Blue",
        "x-amz-meta-empty": "",
        "x-amz-metadata-directive": "REPLACE",
    }
    assert parse_user_metadata(headers) == {"color": "Blue", "empty": ""}


def test_parse_user_metadata_none():
    assert parse_user_metadata({"host": "x"}) == {}


def test_metadata_limit_is_2kb_of_names_and_values():
    # name "k" (1 byte) + value: exactly 2048 bytes is allowed.
    assert parse_user_metadata({"x-amz-meta-k": "v" * 2047})["k"] == "v" * 2047
    with pytest.raises(S3Error) as raised:
        parse_user_metadata({"x-amz-meta-k": "v" * 2048})
    assert raised.value.code == "MetadataTooLarge"
    assert raised.value.extra == {"Size": "2049", "MaxSizeAllowed": "2048"}


def test_metadata_limit_sums_all_headers_in_utf8():
    headers = {f"x-amz-meta-k{i}": "é" * 100 for i in range(10)}  # 10 * (2 + 200) bytes
    assert len(parse_user_metadata(headers)) == 10
    headers["x-amz-meta-more"] = "v"
    headers["x-amz-meta-last"] = "v" * 20
    with pytest.raises(S3Error):
        parse_user_metadata(headers)


def test_metadata_header_without_name():
    with pytest.raises(S3Error) as raised:
        parse_user_metadata({"x-amz-meta-": "v"})
    assert raised.value.code == "InvalidArgument"
