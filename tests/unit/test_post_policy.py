import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.config import Config

from granary.api.s3.errors import S3Error
from granary.api.s3.post_policy import check_form, check_length, decode_policy, form_signer

KEY_ID = "GK0123456789abcdef01234567"
SECRET = "s" * 64
REGION = "us-east-1"
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def encode(document: object) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def policy(*conditions: object, expiration: str = "2030-01-02T03:04:06.000Z"):
    return decode_policy(encode({"expiration": expiration, "conditions": list(conditions)}))


def secret_of(key_id: str) -> str | None:
    return SECRET if key_id == KEY_ID else None


def error_of(call, *args) -> S3Error:
    with pytest.raises(S3Error) as caught:
        call(*args)
    return caught.value


# --- decoding -----------------------------------------------------------------


def test_decode_policy():
    decoded = policy(
        {"Bucket": "b"},
        ["StArTs-WiTh", "$Key", "user/"],
        ["eq", "$x-amz-meta-a", "1"],
        ["content-length-range", 1, "1048576"],
    )
    assert decoded.expiration == datetime(2030, 1, 2, 3, 4, 6, tzinfo=UTC)
    assert [(c.operator, c.field, c.value) for c in decoded.conditions] == [
        ("eq", "bucket", "b"),
        ("starts-with", "key", "user/"),
        ("eq", "x-amz-meta-a", "1"),
    ]
    assert decoded.length_range == (1, 1048576)
    assert policy(expiration="2030-01-02T03:04:06Z").length_range is None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"conditions": []}, "Policy missing expiration."),
        ({"EXPIRATION": "2030-01-01T00:00:00Z", "conditions": []}, "Policy missing expiration."),
        ({"expiration": "2030-01-01T00:00:00Z"}, "Policy missing conditions."),
        ({"expiration": "2030-01-01T00:00:00Z", "CONDITIONS": []}, "Policy missing conditions."),
        (
            {"expiration": "2030-01-01 00:00:00+00:00", "conditions": []},
            "Invalid 'expiration' value: '2030-01-01 00:00:00+00:00'",
        ),
        ({"expiration": "2030-02-30T00:00:00Z", "conditions": []}, None),
        ({"expiration": 1, "conditions": []}, None),
        ({"expiration": "2030-01-01T00:00:00Z", "conditions": {}}, None),
        ({"expiration": "2030-01-01T00:00:00Z", "conditions": [{}]}, None),
        ({"expiration": "2030-01-01T00:00:00Z", "conditions": [{"a": "1", "b": "2"}]}, None),
        ({"expiration": "2030-01-01T00:00:00Z", "conditions": [{"a": 1}]}, None),
        ({"expiration": "2030-01-01T00:00:00Z", "conditions": [["eq", "key", "k"]]}, None),
        ({"expiration": "2030-01-01T00:00:00Z", "conditions": [["ends-with", "$k", "k"]]}, None),
        ({"expiration": "2030-01-01T00:00:00Z", "conditions": [["eq", "$k"]]}, None),
        ({"expiration": "2030-01-01T00:00:00Z", "conditions": ["eq"]}, None),
        ({"expiration": "2030-01-01T00:00:00Z", "conditions": [["content-length-range", 0]]}, None),
        (
            {"expiration": "2030-01-01T00:00:00Z", "conditions": [["content-length-range", -1, 0]]},
            None,
        ),
        (
            {"expiration": "2030-01-01T00:00:00Z", "conditions": [["content-length-range", 9, 1]]},
            None,
        ),
        (
            {
                "expiration": "2030-01-01T00:00:00Z",
                "conditions": [["content-length-range", 0, True]],
            },
            None,
        ),
        ([], "Invalid JSON."),
    ],
)
def test_invalid_policies(document, message):
    error = error_of(decode_policy, encode(document))
    assert (error.code, error.status) == ("InvalidPolicyDocument", 400)
    assert error.message.startswith("Invalid Policy: ")
    if message is not None:
        assert error.message == "Invalid Policy: " + message


@pytest.mark.parametrize("encoded", ["not base64!", base64.b64encode(b"{nope").decode(), ""])
def test_undecodable_policies(encoded):
    assert error_of(decode_policy, encoded).code == "InvalidPolicyDocument"


# --- checking a form ----------------------------------------------------------


def test_conditions_that_hold():
    checked = policy(
        {"bucket": "photos"},
        ["starts-with", "$key", "user/"],
        {"acl": "private"},
        ["starts-with", "$Content-Type", "image/"],
        ["starts-with", "$x-amz-meta-tag", ""],
        ["eq", "$success_action_status", "201"],
    )
    fields = {
        "key": "user/cat.png",
        "acl": "private",
        "content-type": "image/png, image/jpeg",
        "success_action_status": "201",
        "policy": "...",
        "x-amz-signature": "...",
        "x-ignore-me": "anything",
        "x-amz-checksum-crc32": "AAAAAA==",
    }
    check_form(checked, fields, "photos", NOW)


@pytest.mark.parametrize(
    ("fields", "bucket", "failed"),
    [
        ({"key": "other/cat.png", "acl": "private"}, "photos", '["starts-with", "$key", "user/"]'),
        ({"key": "user/cat.png", "acl": "public-read"}, "photos", '["eq", "$acl", "private"]'),
        ({"key": "user/cat.png"}, "photos", '["eq", "$acl", "private"]'),
        ({"key": "user/x", "acl": "private"}, "videos", '["eq", "$bucket", "photos"]'),
    ],
)
def test_failed_conditions(fields, bucket, failed):
    checked = policy({"bucket": "photos"}, ["starts-with", "$key", "user/"], {"acl": "private"})
    error = error_of(check_form, checked, fields, bucket, NOW)
    assert (error.code, error.status) == ("AccessDenied", 403)
    assert error.message == f"Invalid according to Policy: Policy Condition failed: {failed}"


def test_content_type_list_needs_every_type_to_match():
    checked = policy(["starts-with", "$content-type", "image/"])
    error = error_of(check_form, checked, {"content-type": "image/png,text/html"}, "b", NOW)
    assert "Policy Condition failed" in error.message


def test_values_are_compared_literally():
    checked = policy(["starts-with", "$key", "\\$foo"])
    check_form(checked, {"key": "\\$foo.txt"}, "b", NOW)
    with pytest.raises(S3Error):
        check_form(checked, {"key": "$foo.txt"}, "b", NOW)


def test_every_field_needs_a_condition():
    checked = policy(["starts-with", "$key", ""])
    fields = {"key": "k", "x-amz-meta-a": "1", "success_action_status": "201"}
    error = error_of(check_form, checked, fields, "b", NOW)
    assert error.code == "AccessDenied"
    assert error.message == (
        "Invalid according to Policy: Extra input fields: x-amz-meta-a, success_action_status"
    )


def test_expired_policy():
    checked = policy(expiration="2030-01-02T03:04:05Z")
    error = error_of(check_form, checked, {}, "b", NOW)
    assert (error.code, error.message) == (
        "AccessDenied",
        "Invalid according to Policy: Policy expired.",
    )
    check_form(checked, {}, "b", NOW - timedelta(seconds=1))


def test_check_length():
    ranged = policy(["content-length-range", 10, 20])
    check_length(ranged, 10)
    check_length(ranged, 20)
    assert error_of(check_length, ranged, 9).code == "EntityTooSmall"
    large = error_of(check_length, ranged, 21)
    assert (large.code, large.status, large.extra["MaxSizeAllowed"]) == (
        "EntityTooLarge",
        400,
        "20",
    )
    check_length(policy(), 1 << 40)


# --- signatures ---------------------------------------------------------------


def botocore_fields(key_id: str = KEY_ID, region: str = REGION) -> dict[str, str]:
    """A form signed by botocore, lower-cased as the handler sees it."""
    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id=key_id,
        aws_secret_access_key=SECRET,
        region_name=region,
        config=Config(signature_version="s3v4"),
    )
    post = client.generate_presigned_post("b", "k", ExpiresIn=60)
    return {name.lower(): value for name, value in post["fields"].items()}


def sigv2_fields(secret: str = SECRET) -> dict[str, str]:
    encoded = encode({"expiration": "2030-01-01T00:00:00Z", "conditions": []})
    digest = hmac.new(secret.encode(), encoded.encode(), hashlib.sha1).digest()
    return {
        "awsaccesskeyid": KEY_ID,
        "policy": encoded,
        "signature": base64.b64encode(digest).decode(),
    }


def test_sigv4_signed_form():
    assert form_signer(botocore_fields(), secret_of, REGION) == KEY_ID


def test_sigv2_signed_form():
    assert form_signer(sigv2_fields(), secret_of, REGION) == KEY_ID


def test_unsigned_form():
    assert form_signer({"key": "k", "acl": "public-read"}, secret_of, REGION) is None


@pytest.mark.parametrize(
    "change",
    [
        {"x-amz-signature": "0" * 64},
        {"x-amz-signature": "é"},
        {"policy": encode({"expiration": "2099-01-01T00:00:00Z", "conditions": []})},
    ],
)
def test_sigv4_mismatch(change):
    fields = {**botocore_fields(), **change}
    assert error_of(form_signer, fields, secret_of, REGION).code == "SignatureDoesNotMatch"


def test_sigv2_mismatch():
    fields = sigv2_fields(secret="wrong")
    assert error_of(form_signer, fields, secret_of, REGION).code == "SignatureDoesNotMatch"


def test_unknown_access_key():
    error = error_of(form_signer, botocore_fields(key_id="GKunknown"), secret_of, REGION)
    assert (error.code, error.status) == ("InvalidAccessKeyId", 403)
    fields = {**sigv2_fields(), "awsaccesskeyid": "GKunknown"}
    assert error_of(form_signer, fields, secret_of, REGION).code == "InvalidAccessKeyId"


@pytest.mark.parametrize(
    ("change", "argument"),
    [
        ({"x-amz-algorithm": "AWS4-HMAC-SHA1"}, "x-amz-algorithm"),
        ({"x-amz-credential": "GK/2030/us-east-1/s3/aws4_request"}, "x-amz-credential"),
        ({"x-amz-credential": f"{KEY_ID}/20300101/us-east-1/sqs/aws4_request"}, "x-amz-credential"),
        ({"x-amz-credential": f"{KEY_ID}/20300101/eu-west-1/s3/aws4_request"}, "x-amz-credential"),
        ({"x-amz-date": "2030-01-01"}, "x-amz-date"),
        ({"x-amz-date": None}, "x-amz-date"),
        ({"x-amz-signature": None}, "x-amz-signature"),
        ({"policy": None}, "policy"),
    ],
)
def test_sigv4_malformed(change, argument):
    fields = {**botocore_fields(), **change}
    fields = {name: value for name, value in fields.items() if value is not None}
    error = error_of(form_signer, fields, secret_of, REGION)
    assert (error.code, error.status, error.extra["ArgumentName"]) == (
        "InvalidArgument",
        400,
        argument,
    )


@pytest.mark.parametrize("missing", ["signature", "awsaccesskeyid", "policy"])
def test_sigv2_incomplete(missing):
    fields = sigv2_fields()
    del fields[missing]
    error = error_of(form_signer, fields, secret_of, REGION)
    assert (error.code, error.extra["ArgumentName"]) == ("InvalidArgument", missing)


def test_policy_without_signature():
    fields = {"policy": sigv2_fields()["policy"], "key": "k"}
    assert error_of(form_signer, fields, secret_of, REGION).code == "InvalidArgument"
