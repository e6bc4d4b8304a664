"""Conditional writes (If-None-Match, If-Match) with boto3: their answers, and that
racing ones have one winner, on one node and through the three nodes of a cluster."""

from __future__ import annotations

import os
import threading
from collections import Counter

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import start_cluster

MiB = 1 << 20


def error_code(error: ClientError) -> tuple[int, str]:
    return error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]


def put_outcome(client, **kwargs) -> str:
    """'ok', or the error code of a PutObject."""
    try:
        client.put_object(**kwargs)
    except ClientError as error:
        return error_code(error)[1]
    return "ok"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory.mktemp("conditional"), 3, ["dc1", "dc2", "dc3"])
    cluster.nodes[0].client().create_bucket(Bucket="races")
    yield cluster
    cluster.stop()


@pytest.mark.parametrize("size", [100, 3 * MiB], ids=["inline", "blocks"])
def test_if_none_match_and_if_match_answers(s3, bucket, size):
    first, second = os.urandom(size), os.urandom(size)
    etag = s3.put_object(Bucket=bucket, Key="k", Body=first, IfNoneMatch="*")["ETag"]
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key="k", Body=second, IfNoneMatch="*")
    assert error_code(refused.value) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as stale:
        s3.put_object(Bucket=bucket, Key="k", Body=second, IfMatch='"0123"')
    assert error_code(stale.value) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == first
    swapped = s3.put_object(Bucket=bucket, Key="k", Body=second, IfMatch=etag)["ETag"]
    assert swapped != etag
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == second
    with pytest.raises(ClientError) as missing:
        s3.put_object(Bucket=bucket, Key="absent", Body=first, IfMatch=etag)
    assert error_code(missing.value) == (404, "NoSuchKey")
    s3.delete_object(Bucket=bucket, Key="k")
    s3.put_object(Bucket=bucket, Key="k", Body=first, IfNoneMatch="*")  # free again


@pytest.mark.parametrize("size", [100, 3 * MiB], ids=["inline", "blocks"])
def test_a_copy_writes_its_destination_only_if_its_condition_holds(s3, bucket, size):
    body = os.urandom(size)
    s3.put_object(Bucket=bucket, Key="src", Body=body)
    source = {"Bucket": bucket, "Key": "src"}
    s3.copy_object(Bucket=bucket, Key="dst", CopySource=source, IfNoneMatch="*")
    with pytest.raises(ClientError) as taken:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource=source, IfNoneMatch="*")
    assert error_code(taken.value) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as stale:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource=source, IfMatch='"0123"')
    assert error_code(stale.value) == (412, "PreconditionFailed")
    etag = s3.head_object(Bucket=bucket, Key="dst")["ETag"]
    s3.copy_object(Bucket=bucket, Key="dst", CopySource=source, IfMatch=etag)
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == body


def test_a_complete_multipart_upload_refused_by_its_condition_stays_open(s3, bucket):
    s3.put_object(Bucket=bucket, Key="mpu", Body=b"there already")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mpu")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="mpu", UploadId=upload, PartNumber=1, Body=b"p" * 100)
    parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    with pytest.raises(ClientError) as refused:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="mpu", UploadId=upload, MultipartUpload=parts, IfNoneMatch="*"
        )
    assert error_code(refused.value) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=bucket, Key="mpu")["Body"].read() == b"there already"
    s3.complete_multipart_upload(Bucket=bucket, Key="mpu", UploadId=upload, MultipartUpload=parts)
    assert s3.get_object(Bucket=bucket, Key="mpu")["Body"].read() == b"p" * 100


def race(clients: list, key: str, bucket: str, **condition) -> tuple[Counter, dict[str, bytes]]:
    """Every client PUTs its own body to `key` at the same moment, with `condition`."""
    barrier = threading.Barrier(len(clients))
    outcomes: dict[str, str] = {}
    bodies = {f"client-{i}": os.urandom(64) for i in range(len(clients))}

    def put(name: str, client) -> None:
        barrier.wait()
        outcomes[name] = put_outcome(client, Bucket=bucket, Key=key, Body=bodies[name], **condition)

    threads = [
        threading.Thread(target=put, args=(name, client))
        for name, client in zip(bodies, clients, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = {name: bodies[name] for name, outcome in outcomes.items() if outcome == "ok"}
    return Counter(outcomes.values()), winners


def check_one_winner(s3, bucket: str, key: str, counts: Counter, winners: dict) -> None:
    assert counts["ok"] == 1, counts
    assert set(counts) <= {"ok", "PreconditionFailed", "ConditionalRequestConflict"}, counts
    (body,) = winners.values()
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body


def test_racing_creates_on_one_node_have_one_winner(server, s3, bucket):
    clients = [server.client() for _ in range(6)]
    for trial in range(5):
        counts, winners = race(clients, f"new-{trial}", bucket, IfNoneMatch="*")
        check_one_winner(s3, bucket, f"new-{trial}", counts, winners)


def test_racing_creates_and_swaps_through_three_nodes_have_one_winner(cluster):
    clients = [node.client() for node in cluster.nodes for _ in range(2)]
    s3 = clients[0]
    for trial in range(4):
        key = f"hot-{trial}"
        counts, winners = race(clients, key, "races", IfNoneMatch="*")
        check_one_winner(s3, "races", key, counts, winners)
        etag = s3.head_object(Bucket="races", Key=key)["ETag"]
        counts, winners = race(clients, key, "races", IfMatch=etag)
        check_one_winner(s3, "races", key, counts, winners)
