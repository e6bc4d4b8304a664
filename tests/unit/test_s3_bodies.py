import botocore.session
import pytest
from botocore.serialize import create_serializer

from granary.api.s3.bodies import (
    CompletedPart,
    DeleteRequest,
    ObjectToDelete,
    parse_complete_multipart,
    parse_create_bucket,
    parse_delete_objects,
    parse_tagging,
)
from granary.api.s3.errors import S3Error
from granary.api.s3.xml import document

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def error_code(function, body):
    with pytest.raises(S3Error) as raised:
        function(body)
    return raised.value.code


def complete_body(*parts: str) -> bytes:
    return f"<CompleteMultipartUpload {NS}>{''.join(parts)}</CompleteMultipartUpload>".encode()


def part(number, etag='"abc"', extra=""):
    return f"<Part><ETag>{etag}</ETag><PartNumber>{number}</PartNumber>{extra}</Part>"


def test_complete_multipart_parts_and_checksums():
    body = complete_body(
        part(1, "&quot;e1&quot;", "<ChecksumCRC32>AAAAAA==</ChecksumCRC32>"),
        part(
            2, "e2", "<ChecksumSHA256> x= </ChecksumSHA256><ChecksumCRC64NVME>y</ChecksumCRC64NVME>"
        ),
        part(7, '"e7-3"'),
    )
    assert parse_complete_multipart(body) == [
        CompletedPart(1, "e1", {"crc32": "AAAAAA=="}),
        CompletedPart(2, "e2", {"sha256": "x=", "crc64nvme": "y"}),
        CompletedPart(7, "e7-3", {}),
    ]


def test_complete_multipart_without_namespace_and_unknown_elements():
    body = (
        b"<CompleteMultipartUpload><Part><PartNumber> 3 </PartNumber><ETag>a</ETag>"
        b"<ChecksumXXHASH3>z</ChecksumXXHASH3></Part><Other/></CompleteMultipartUpload>"
    )
    assert parse_complete_multipart(body) == [CompletedPart(3, "a", {})]


def test_complete_multipart_as_boto3_sends_it():
    # botocore serialises Parts without whitespace, ETags still quoted.
    body = document(
        "CompleteMultipartUpload",
        [("Part", [("ETag", f'"{i:032x}"'), ("PartNumber", i)]) for i in range(1, 10_001)],
    )
    parts = parse_complete_multipart(body)
    assert len(parts) == 10_000
    assert parts[-1] == CompletedPart(10_000, f"{10_000:032x}", {})


@pytest.mark.parametrize(
    "body",
    [
        complete_body(),
        complete_body("<Part><ETag>a</ETag></Part>"),
        complete_body("<Part><PartNumber>1</PartNumber></Part>"),
        complete_body(part("one")),
        complete_body(part("1.5")),
        complete_body(part("")),
        b"<Complete><Part><ETag>a</ETag><PartNumber>1</PartNumber></Part></Complete>",
        b"<CompleteMultipartUpload>",
    ],
)
def test_complete_multipart_malformed(body):
    assert error_code(parse_complete_multipart, body) == "MalformedXML"


def test_complete_multipart_part_number_limits():
    assert error_code(parse_complete_multipart, complete_body(part(0))) == "InvalidArgument"
    assert error_code(parse_complete_multipart, complete_body(part(-1))) == "InvalidArgument"
    assert error_code(parse_complete_multipart, complete_body(part(10_001))) == "InvalidPart"
    assert parse_complete_multipart(complete_body(part(10_000)))[0].part_number == 10_000


def test_complete_multipart_order():
    assert error_code(parse_complete_multipart, complete_body(part(2), part(1))) == (
        "InvalidPartOrder"
    )
    assert error_code(parse_complete_multipart, complete_body(part(2), part(2), part(1))) == (
        "InvalidPartOrder"
    )
    repeated = parse_complete_multipart(complete_body(part(1), part(1)))
    assert [p.part_number for p in repeated] == [1, 1]
    assert [p.part_number for p in parse_complete_multipart(complete_body(part(1), part(5)))] == [
        1,
        5,
    ]


def delete_body(objects: str, quiet: str = "") -> bytes:
    return f"<Delete {NS}>{quiet}{objects}</Delete>".encode()


def test_delete_objects():
    body = delete_body(
        "<Object><Key> spaced key </Key></Object>"
        "<Object><Key>a&amp;b&#13;</Key><VersionId>v1</VersionId></Object>",
        "<Quiet>true</Quiet>",
    )
    assert parse_delete_objects(body) == DeleteRequest(
        quiet=True,
        objects=[ObjectToDelete(" spaced key ", None), ObjectToDelete("a&b\r", "v1")],
    )


def test_delete_objects_quiet_defaults_to_false():
    request = parse_delete_objects(delete_body("<Object><Key>k</Key></Object>"))
    assert request.quiet is False
    request = parse_delete_objects(
        delete_body("<Object><Key>k</Key></Object>", "<Quiet>FALSE</Quiet>")
    )
    assert request.quiet is False


def test_delete_objects_empty_key_is_kept():
    request = parse_delete_objects(delete_body("<Object><Key></Key></Object>"))
    assert request.objects == [ObjectToDelete("", None)]


def test_delete_objects_limits():
    thousand = "".join(f"<Object><Key>k{i}</Key></Object>" for i in range(1000))
    assert len(parse_delete_objects(delete_body(thousand)).objects) == 1000
    assert error_code(parse_delete_objects, delete_body(thousand + thousand[:30])) == (
        "MalformedXML"
    )
    assert error_code(parse_delete_objects, delete_body("")) == "MalformedXML"


@pytest.mark.parametrize(
    "body",
    [
        delete_body("<Object><VersionId>v</VersionId></Object>"),
        delete_body("<Object><Key>k</Key></Object>", "<Quiet>yes</Quiet>"),
        b"<Remove><Object><Key>k</Key></Object></Remove>",
        b"",
    ],
)
def test_delete_objects_malformed(body):
    assert error_code(parse_delete_objects, body) == "MalformedXML"


def test_create_bucket():
    assert parse_create_bucket(b"") is None
    assert parse_create_bucket(b" \n") is None
    body = (
        f"<CreateBucketConfiguration {NS}><LocationConstraint>garage"
        "</LocationConstraint></CreateBucketConfiguration>"
    ).encode()
    assert parse_create_bucket(body) == "garage"
    assert parse_create_bucket(b"<CreateBucketConfiguration/>") is None
    assert (
        parse_create_bucket(
            b"<CreateBucketConfiguration><LocationConstraint/></CreateBucketConfiguration>"
        )
        is None
    )


def test_create_bucket_malformed():
    assert error_code(parse_create_bucket, b"<Bucket/>") == "MalformedXML"
    assert error_code(parse_create_bucket, b"<CreateBucketConfiguration>") == "MalformedXML"


def botocore_body(operation: str, params: dict) -> bytes:
    """The XML body botocore itself sends for an S3 operation."""
    model = botocore.session.get_session().get_service_model("s3")
    request = create_serializer("rest-xml").serialize_to_request(
        params, model.operation_model(operation)
    )
    return request["body"]


def test_bodies_as_botocore_serialises_them():
    body = botocore_body(
        "CompleteMultipartUpload",
        {
            "Bucket": "b",
            "Key": "k",
            "UploadId": "u",
            "MultipartUpload": {
                "Parts": [
                    {"ETag": '"e1"', "PartNumber": 1, "ChecksumCRC32C": "c1"},
                    {"ETag": '"e2"', "PartNumber": 2, "ChecksumSHA1": "s2"},
                ]
            },
        },
    )
    assert parse_complete_multipart(body) == [
        CompletedPart(1, "e1", {"crc32c": "c1"}),
        CompletedPart(2, "e2", {"sha1": "s2"}),
    ]
    body = botocore_body(
        "DeleteObjects",
        {
            "Bucket": "b",
            "Delete": {"Objects": [{"Key": "a<b"}, {"Key": "x", "VersionId": "v"}], "Quiet": True},
        },
    )
    assert parse_delete_objects(body) == DeleteRequest(
        True, [ObjectToDelete("a<b"), ObjectToDelete("x", "v")]
    )
    body = botocore_body(
        "CreateBucket",
        {"Bucket": "b", "CreateBucketConfiguration": {"LocationConstraint": "eu-west-1"}},
    )
    assert parse_create_bucket(body) == "eu-west-1"


def test_complete_multipart_at_most_ten_thousand_parts():
    parts = [part(n) for n in range(1, 10_001)]
    assert len(parse_complete_multipart(complete_body(*parts))) == 10_000
    assert error_code(parse_complete_multipart, complete_body(*parts, part(10_000))) == (
        "MalformedXML"
    )


def tagging(*tags: tuple[str, str], wrapper: str = "Tagging") -> bytes:
    items = "".join(f"<Tag><Key>{k}</Key><Value>{v}</Value></Tag>" for k, v in tags)
    return f"<{wrapper} {NS}><TagSet>{items}</TagSet></{wrapper}>".encode()


def test_tagging_in_order_with_empty_values():
    assert parse_tagging(tagging(("b", "2"), ("a", ""), ("c d", "x/y"))) == [
        ("b", "2"),
        ("a", ""),
        ("c d", "x/y"),
    ]
    assert parse_tagging(tagging()) == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (tagging(*[(f"k{i}", "v") for i in range(51)]), "InvalidTag"),
        (tagging(("k", "1"), ("k", "2")), "InvalidTag"),
        (tagging(("", "v")), "InvalidTag"),
        (tagging(("k" * 129, "v")), "InvalidTag"),
        (tagging(("k", "v" * 257)), "InvalidTag"),
        (tagging(("k", "v"), wrapper="Tags"), "MalformedXML"),
        (f"<Tagging {NS}/>".encode(), "MalformedXML"),
        (
            f"<Tagging {NS}><TagSet><Tag><Key>k</Key></Tag></TagSet></Tagging>".encode(),
            "MalformedXML",
        ),
    ],
)
def test_tagging_limits_and_malformed_bodies(body, code):
    assert error_code(parse_tagging, body) == code
