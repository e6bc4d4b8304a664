import base64
import hashlib

import pytest
from botocore import httpchecksum
from hypothesis import given, settings
from hypothesis import strategies as st

from granary.util.checksums import (
    ALGORITHMS,
    ChecksumRequestError,
    checksum_element_name,
    checksum_header_name,
    composite_checksum,
    new_checksum,
    requested_checksum,
)

CHECK_INPUT = b"123456789"

BOTOCORE = {
    "crc32": httpchecksum.Crc32Checksum,
    "crc32c": httpchecksum.CrtCrc32cChecksum,
    "crc64nvme": httpchecksum.CrtCrc64NvmeChecksum,
    "sha1": httpchecksum.Sha1Checksum,
    "sha256": httpchecksum.Sha256Checksum,
}


def digest_of(algorithm: str, *chunks: bytes) -> bytes:
    checksum = new_checksum(algorithm)
    for chunk in chunks:
        checksum.update(chunk)
    return checksum.digest()


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("crc32", 0xCBF43926),
        ("crc32c", 0xE3069283),
        ("crc64nvme", 0xAE8B14860A799888),
    ],
)
def test_crc_check_values(algorithm, expected):
    digest = digest_of(algorithm, CHECK_INPUT)
    assert int.from_bytes(digest, "big") == expected
    assert len(digest) == (8 if algorithm == "crc64nvme" else 4)


def test_sha_digests():
    assert digest_of("sha1", b"abc") == hashlib.sha1(b"abc").digest()
    assert digest_of("sha256", b"abc") == hashlib.sha256(b"abc").digest()


def test_empty_input():
    assert digest_of("crc32") == b"\x00\x00\x00\x00"
    assert new_checksum("crc64nvme").b64() == "AAAAAAAAAAA="
    assert digest_of("sha256") == hashlib.sha256(b"").digest()


def test_s3_tests_vectors():
    body = b"A" * 1024
    sha256 = new_checksum("sha256")
    sha256.update(body)
    assert sha256.b64() == "arcu6553sHVAiX4MjW0j7I7vD4w6R+Gz9Ok0Q9lTa+0="
    crc64 = new_checksum("crc64nvme")
    crc64.update(body)
    assert crc64.b64() == "Qeh8oXvGiSo="


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_streaming_equals_one_shot(algorithm):
    data = bytes(range(256)) * 41
    assert digest_of(algorithm, data[:1000], data[1000:1001], data[1001:]) == digest_of(
        algorithm, data
    )


def test_digest_can_be_read_while_streaming():
    checksum = new_checksum("crc32c")
    checksum.update(b"1234")
    checksum.digest()
    checksum.update(b"56789")
    assert checksum.digest() == (0xE3069283).to_bytes(4, "big")


@settings(max_examples=60)
@given(
    st.sampled_from(ALGORITHMS),
    st.lists(st.binary(max_size=3000), max_size=5),
)
def test_matches_botocore(algorithm, chunks):
    ours = new_checksum(algorithm)
    theirs = BOTOCORE[algorithm]()
    for chunk in chunks:
        ours.update(chunk)
        theirs.update(chunk)
    assert ours.digest() == theirs.digest()
    assert ours.b64() == theirs.b64digest()
    assert ours.algorithm == algorithm


def test_unknown_algorithm():
    for function in (new_checksum, checksum_header_name, checksum_element_name):
        with pytest.raises(ValueError):
            function("md5")


def test_names():
    assert checksum_header_name("crc64nvme") == "x-amz-checksum-crc64nvme"
    assert checksum_element_name("crc32c") == "ChecksumCRC32C"
    assert checksum_element_name("sha256") == "ChecksumSHA256"


def test_composite_checksum_s3_tests_vectors():
    one_part = base64.b64decode("arcu6553sHVAiX4MjW0j7I7vD4w6R+Gz9Ok0Q9lTa+0=")
    assert composite_checksum("sha256", [one_part]) == (
        "Ok6Cs5b96ux6+MWQkJO7UBT5sKPBeXBLwvj/hK89smg=-1"
    )
    parts = [hashlib.sha256(letter * 5 * 1024 * 1024).digest() for letter in (b"A", b"B", b"C")]
    assert base64.b64encode(parts[0]) == b"275VF5loJr1YYawit0XSHREhkFXYkkPKGuoK0x9VKxI="
    assert composite_checksum("sha256", parts) == ("uWBwpe1dxI4Vw8Gf0X9ynOdw/SS6VBzfWm9giiv1sf4=-3")


def test_composite_crc_is_crc_of_part_crcs():
    parts = [digest_of("crc32", b"part one"), digest_of("crc32", b"part two")]
    expected = base64.b64encode(digest_of("crc32", parts[0] + parts[1])).decode()
    assert composite_checksum("crc32", parts) == f"{expected}-2"


def test_requested_checksum_none():
    assert requested_checksum({}) is None
    assert requested_checksum({"x-amz-checksum-mode": "ENABLED"}) is None
    assert requested_checksum({"x-amz-checksum-type": "COMPOSITE"}) is None
    assert requested_checksum({"x-amz-trailer": "x-amz-meta-other"}) is None


def test_requested_checksum_from_value_header():
    assert requested_checksum({"x-amz-checksum-crc32": "AAAAAA=="}) == ("crc32", "AAAAAA==")
    assert requested_checksum({"X-Amz-Checksum-SHA256": "abc"}) == ("sha256", "abc")
    headers = {"x-amz-sdk-checksum-algorithm": "CRC32C", "x-amz-checksum-crc32c": "v"}
    assert requested_checksum(headers) == ("crc32c", "v")


def test_requested_checksum_value_is_not_validated():
    # s3-tests expect BadDigest, from the comparison, for a value like "bad",
    # and CompleteMultipartUpload carries composite values ending in "-N".
    assert requested_checksum({"x-amz-checksum-sha256": "bad"}) == ("sha256", "bad")
    assert requested_checksum({"x-amz-checksum-sha256": "abc=-3"}) == ("sha256", "abc=-3")


def test_requested_checksum_from_trailer():
    headers = {
        "x-amz-trailer": "x-amz-checksum-crc64nvme",
        "x-amz-sdk-checksum-algorithm": "CRC64NVME",
    }
    assert requested_checksum(headers) == ("crc64nvme", None)
    assert requested_checksum({"x-amz-trailer": " X-Amz-Checksum-CRC32 "}) == ("crc32", None)


def test_requested_checksum_algorithm_only():
    assert requested_checksum({"x-amz-sdk-checksum-algorithm": "SHA1"}) == ("sha1", None)
    # CreateMultipartUpload names the algorithm for the parts to come.
    assert requested_checksum({"x-amz-checksum-algorithm": "CRC32"}) == ("crc32", None)


@pytest.mark.parametrize(
    "headers",
    [
        {"x-amz-checksum-crc32": "a", "x-amz-checksum-crc32c": "b"},
        {"x-amz-checksum-crc32": "", "x-amz-checksum-sha1": ""},
        {"x-amz-checksum-crc32": "a", "x-amz-trailer": "x-amz-checksum-crc32"},
    ],
)
def test_requested_checksum_more_than_one(headers):
    with pytest.raises(ChecksumRequestError, match="Multiple checksum Types"):
        requested_checksum(headers)


@pytest.mark.parametrize(
    "headers",
    [
        {"x-amz-sdk-checksum-algorithm": "MD5"},
        {"x-amz-checksum-algorithm": "bogus"},
        {"x-amz-checksum-xxhash64": "v"},
        {"x-amz-trailer": "x-amz-checksum-sha512"},
        {"x-amz-sdk-checksum-algorithm": "CRC32", "x-amz-checksum-crc32c": "v"},
        {"x-amz-sdk-checksum-algorithm": "CRC32", "x-amz-checksum-algorithm": "SHA256"},
        {"x-amz-sdk-checksum-algorithm": "SHA1", "x-amz-trailer": "x-amz-checksum-crc32"},
    ],
)
def test_requested_checksum_invalid(headers):
    with pytest.raises(ChecksumRequestError):
        requested_checksum(headers)


def test_mismatch_message_names_the_header():
    headers = {"x-amz-sdk-checksum-algorithm": "crc32", "x-amz-checksum-crc32c": "v"}
    with pytest.raises(ChecksumRequestError) as raised:
        requested_checksum(headers)
    assert str(raised.value) == "Value for x-amz-sdk-checksum-algorithm header is invalid."
