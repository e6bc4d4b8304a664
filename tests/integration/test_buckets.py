"""Bucket operations, and virtual-host style addressing."""

from __future__ import annotations

import http.client

import pytest
from botocore.exceptions import ClientError
from conftest import node_config, signed_request_headers


def error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def test_bucket_lifecycle(s3):
    s3.create_bucket(Bucket="life-cycle")
    assert "life-cycle" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.head_bucket(Bucket="life-cycle")["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.get_bucket_location(Bucket="life-cycle")["LocationConstraint"] is None
    assert "Status" not in s3.get_bucket_versioning(Bucket="life-cycle")
    s3.put_object(Bucket="life-cycle", Key="k", Body=b"x")
    # Created again by its owner: us-east-1 answers 200 and leaves the bucket as it is.
    s3.create_bucket(Bucket="life-cycle")
    assert s3.get_object(Bucket="life-cycle", Key="k")["Body"].read() == b"x"
    with pytest.raises(ClientError) as caught:
        s3.delete_bucket(Bucket="life-cycle")
    assert error_code(caught.value) == "BucketNotEmpty"
    s3.delete_object(Bucket="life-cycle", Key="k")
    s3.delete_bucket(Bucket="life-cycle")
    with pytest.raises(ClientError) as caught:
        s3.head_bucket(Bucket="life-cycle")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    s3.create_bucket(Bucket="life-cycle")
    assert "Contents" not in s3.list_objects_v2(Bucket="life-cycle")


@pytest.mark.parametrize("name", ["ab", "UPPER", "a..b", "192.168.1.1", "-start", "x" * 64])
def test_invalid_bucket_names(s3, name):
    with pytest.raises(ClientError) as caught:
        s3.create_bucket(Bucket=name)
    assert error_code(caught.value) == "InvalidBucketName"


def test_wrong_location_constraint(s3):
    with pytest.raises(ClientError) as caught:
        s3.create_bucket(
            Bucket="elsewhere", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"}
        )
    assert error_code(caught.value) == "InvalidLocationConstraint"


def test_list_buckets_pages(s3):
    for index in range(3):
        s3.create_bucket(Bucket=f"paged-{index}")
    first = s3.list_buckets(MaxBuckets=2, Prefix="paged-")
    assert [b["Name"] for b in first["Buckets"]] == ["paged-0", "paged-1"]
    rest = s3.list_buckets(
        MaxBuckets=2, Prefix="paged-", ContinuationToken=first["ContinuationToken"]
    )
    assert [b["Name"] for b in rest["Buckets"]] == ["paged-2"]
    assert "ContinuationToken" not in rest


def request(server, method: str, host: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    url = f"http://{host}:{server.s3_port}{path}"
    headers = signed_request_headers(method, url, {"Content-Length": str(len(body))}, body)
    connection = http.client.HTTPConnection("127.0.0.1", server.s3_port, timeout=30)
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.read()


def test_virtual_host_style(own_server):
    own_server.config_text = node_config(own_server).replace(
        "[s3_api]\n", '[s3_api]\nroot_domain = ".s3.granary.test"\n'
    )
    own_server.start()
    own_server.client().create_bucket(Bucket="vhost")
    status, _ = request(own_server, "PUT", "vhost.s3.granary.test", "/dir/key.txt", b"hello")
    assert status == 200
    status, body = request(own_server, "GET", "vhost.s3.granary.test", "/dir/key.txt")
    assert (status, body) == (200, b"hello")
    status, body = request(own_server, "GET", "vhost.s3.granary.test", "/?list-type=2")
    assert status == 200 and b"<Key>dir/key.txt</Key>" in body
    assert (
        own_server.client().get_object(Bucket="vhost", Key="dir/key.txt")["Body"].read() == b"hello"
    )
