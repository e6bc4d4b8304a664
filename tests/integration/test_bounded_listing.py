"""Listings whose work is bounded: a page that cannot be filled within the bound is
answered short and truncated (clients follow it), and no range read's RPC reply
grows with the bucket (ListMultipartUploads on a 3-node cluster of 5,000 inline
objects, whose rows total more than the 16 MiB RPC frame limit)."""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ACCESS_KEY, SECRET_KEY, Cluster, GranaryServer, start_cluster
from test_clients import client_env, run, write_file

from granary.api.s3.context import S3Settings

DELETE_BATCH = 1000
# More delete markers than the rows one list request may read (10 reads of 1000 rows).
DELETED = 12_000
UPLOAD_THREADS = 16


def delete_many(client, bucket: str, keys: list[str]) -> None:
    """Delete markers for `keys` (deleting a key that never existed writes one too)."""
    for start in range(0, len(keys), DELETE_BATCH):
        objects = [{"Key": key} for key in keys[start : start + DELETE_BATCH]]
        client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})


def paginated_keys(client, operation: str, bucket: str, **params) -> list[str]:
    pages = client.get_paginator(operation).paginate(Bucket=bucket, **params)
    field = "Versions" if operation == "list_object_versions" else "Contents"
    return [item["Key"] for page in pages for item in page.get(field, [])]


def aws_cli(server: GranaryServer, home: Path, *args: str) -> str:
    config = write_file(
        home / "aws-config", b"[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n"
    )
    env = client_env(
        home,
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_CONFIG_FILE=str(config),
    )
    command = [sys.executable, "-m", "awscli", "--endpoint-url", server.endpoint, *args]
    return run(command, env).stdout


@pytest.fixture(scope="module")
def deleted_run_bucket(server) -> str:
    """Live keys around a run of DELETED delete markers: 'a', 'gone/…' (all deleted), 'z'."""
    client = server.client()
    name = f"bounded-{os.getpid()}"
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="a", Body=b"first")
    client.put_object(Bucket=name, Key="z", Body=b"last")
    delete_many(client, name, [f"gone/{i:05}" for i in range(DELETED)])
    return name


def test_a_page_over_a_long_run_of_deleted_keys_is_short_and_truncated(server, deleted_run_bucket):
    client = server.client()
    page = client.list_objects_v2(Bucket=deleted_run_bucket)
    assert [obj["Key"] for obj in page["Contents"]] == ["a"]
    assert page["KeyCount"] == 1
    assert page["IsTruncated"] is True
    rest = client.list_objects_v2(
        Bucket=deleted_run_bucket, ContinuationToken=page["NextContinuationToken"]
    )
    assert rest["KeyCount"] + page["KeyCount"] <= 2
    v1 = client.list_objects(Bucket=deleted_run_bucket)
    assert v1["IsTruncated"] is True
    assert v1["NextMarker"].startswith("gone/"), "a short page says where it stopped"


@pytest.mark.parametrize("operation", ["list_objects_v2", "list_objects", "list_object_versions"])
def test_boto3_paginators_follow_short_pages_to_every_live_key(
    server, deleted_run_bucket, operation
):
    client = server.client()
    assert paginated_keys(client, operation, deleted_run_bucket) == ["a", "z"]
    assert paginated_keys(client, operation, deleted_run_bucket, Prefix="gone/") == []


def test_a_delimiter_listing_does_not_show_the_emptied_directory(server, deleted_run_bucket):
    client = server.client()
    pages = list(
        client.get_paginator("list_objects_v2").paginate(Bucket=deleted_run_bucket, Delimiter="/")
    )
    assert [obj["Key"] for page in pages for obj in page.get("Contents", [])] == ["a", "z"]
    assert not any(page.get("CommonPrefixes") for page in pages)


def test_aws_cli_follows_short_pages(server, deleted_run_bucket, tmp_path):
    listing = aws_cli(server, tmp_path, "s3", "ls", f"s3://{deleted_run_bucket}/")
    assert [line.split()[-1] for line in listing.splitlines()] == ["a", "z"]
    v1 = json.loads(
        aws_cli(server, tmp_path, "s3api", "list-objects", "--bucket", deleted_run_bucket)
    )
    assert [obj["Key"] for obj in v1["Contents"]] == ["a", "z"]


# ---- 3 nodes: no range read's reply grows with the bucket -------------------------------

OBJECTS = 5000
BODY = S3Settings().inline_threshold  # the largest body stored inline, in the object row


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory) -> Cluster:
    cluster = start_cluster(tmp_path_factory.mktemp("bounded3"), 3, ["dc1", "dc2", "dc3"])
    yield cluster
    cluster.stop()


def test_list_multipart_uploads_answers_on_a_bucket_larger_than_an_rpc_frame(cluster3):
    """Every replica used to send every row of the bucket in one reply (> 16 MiB): 503."""
    client = cluster3.nodes[0].client(max_pool_connections=UPLOAD_THREADS)
    client.create_bucket(Bucket="large")
    body = os.urandom(BODY)
    assert OBJECTS * BODY > 16 << 20
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        keys = [f"obj/{i:05}" for i in range(OBJECTS)]
        list(pool.map(lambda key: client.put_object(Bucket="large", Key=key, Body=body), keys))
    upload = client.create_multipart_upload(Bucket="large", Key="zzz/upload")
    for node in cluster3.nodes:
        reader = node.client()
        pages = list(reader.get_paginator("list_multipart_uploads").paginate(Bucket="large"))
        found = [u for page in pages for u in page.get("Uploads", [])]
        assert [(u["Key"], u["UploadId"]) for u in found] == [("zzz/upload", upload["UploadId"])]
        assert paginated_keys(reader, "list_objects_v2", "large") == keys
