"""Races between writers of one key, upload or bucket: answers stay right, nothing leaks."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError
from conftest import (
    Cluster,
    admin_call,
    block_files,
    raw_request,
    start_cluster,
    start_configured,
    wait_until,
)

MIB = 1 << 20


@pytest.fixture(params=[1, 2], ids=["1-process", "2-processes"])
def s3_processes(request) -> int:
    """The single-node races with S3 served by one process, then by two: the
    racing requests then spread over both, so the node-wide locks are what
    orders them."""
    return request.param


def complete_xml(etags: dict[int, str], numbers: tuple[int, ...]) -> bytes:
    parts = "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{etags[n]}</ETag></Part>" for n in numbers
    )
    return f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()


def status_of(sock: socket.socket) -> int:
    sock.settimeout(30)
    return int(sock.recv(65536).split(b" ", 2)[1])


def multipart_with_parts(s3, bucket: str, key: str, sizes: dict[int, int]):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    bodies = {n: os.urandom(size) for n, size in sizes.items()}
    etags = {
        n: s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=b)["ETag"]
        for n, b in bodies.items()
    }
    return upload_id, bodies, etags


def test_abort_during_complete_never_destroys_the_completed_object(own_server, s3_processes):
    s3 = start_configured(own_server, block_gc_delay_secs=0, s3_processes=s3_processes)
    s3.create_bucket(Bucket="race")
    upload_id, bodies, etags = multipart_with_parts(s3, "race", "big", {1: 5 * MIB, 2: MIB})
    head, body = raw_request(
        own_server, "POST", f"/race/big?uploadId={upload_id}", complete_xml(etags, (1, 2))
    )
    with socket.create_connection(("127.0.0.1", own_server.s3_port)) as sock:
        sock.sendall(head + body[:10])
        time.sleep(0.3)
        s3.abort_multipart_upload(Bucket="race", Key="big", UploadId=upload_id)
        sock.sendall(body[10:])
        completed = status_of(sock)
    if completed == 200:
        assert s3.get_object(Bucket="race", Key="big")["Body"].read() == bodies[1] + bodies[2]
    else:
        assert completed == 404
        assert "Contents" not in s3.list_objects_v2(Bucket="race")
    s3.delete_object(Bucket="race", Key="big")
    data_dir = own_server.root / "data"
    wait_until(lambda: not block_files(data_dir), what="every block to be collected")


def test_two_completes_with_different_parts_serve_what_the_etag_says(own_server, s3_processes):
    s3 = start_configured(own_server, block_gc_delay_secs=0, s3_processes=s3_processes)
    s3.create_bucket(Bucket="race")
    upload_id, bodies, etags = multipart_with_parts(
        s3, "race", "m", {1: 5 * MIB, 2: 5 * MIB, 3: 5 * MIB}
    )
    requests = [
        raw_request(own_server, "POST", f"/race/m?uploadId={upload_id}", complete_xml(etags, ns))
        for ns in ((1, 2), (1, 3))
    ]
    sockets = [socket.create_connection(("127.0.0.1", own_server.s3_port)) for _ in requests]
    for sock, (head, _) in zip(sockets, requests, strict=True):
        sock.sendall(head)
    time.sleep(0.3)
    for sock, (_, body) in zip(sockets, requests, strict=True):
        sock.sendall(body)
    statuses = [status_of(sock) for sock in sockets]
    for sock in sockets:
        sock.close()
    assert 200 in statuses

    def etag_of(numbers):
        joined = b"".join(bytes.fromhex(etags[n].strip('"')) for n in numbers)
        return f'"{hashlib.md5(joined).hexdigest()}-{len(numbers)}"'

    served = s3.get_object(Bucket="race", Key="m")
    data = served["Body"].read()
    expected = {etag_of((1, 2)): bodies[1] + bodies[2], etag_of((1, 3)): bodies[1] + bodies[3]}
    assert data == expected[served["ETag"]]


def test_interrupted_uploads_leave_no_blocks_behind(own_server, s3_processes):
    s3 = start_configured(own_server, block_gc_delay_secs=0, s3_processes=s3_processes)
    s3.create_bucket(Bucket="cut")
    for index in range(8):
        head, body = raw_request(own_server, "PUT", f"/cut/k{index}", os.urandom(6 * MIB))
        with socket.create_connection(("127.0.0.1", own_server.s3_port)) as sock:
            sock.sendall(head + body[: (2 + index % 3) * MIB + 12345])
            time.sleep(0.2)
    wait_until(lambda: "Contents" not in s3.list_objects_v2(Bucket="cut"), what="an empty listing")
    data_dir = own_server.root / "data"
    wait_until(lambda: not block_files(data_dir), what="every block to be collected")


def test_concurrent_overwrites_of_one_key_leak_nothing(own_server, s3_processes):
    s3 = start_configured(own_server, block_gc_delay_secs=0, s3_processes=s3_processes)
    s3.create_bucket(Bucket="hot")

    def overwrite(index: int) -> None:
        client = own_server.client()
        for round_ in range(4):
            client.put_object(Bucket="hot", Key="k", Body=os.urandom(2 * MIB + index + round_))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(overwrite, range(8)))
    final = s3.get_object(Bucket="hot", Key="k")
    assert hashlib.md5(final["Body"].read()).hexdigest() == final["ETag"].strip('"')
    s3.delete_object(Bucket="hot", Key="k")
    data_dir = own_server.root / "data"
    wait_until(lambda: not block_files(data_dir), what="every block to be collected")


# ---- a bucket deleted while an object is written into it ------------------

PUT_SIZE = 2 * MIB
RACE_TRIALS = 20


def error_code(call) -> str:
    """'OK' if `call()` succeeds, else the S3 error code it answered."""
    try:
        call()
    except ClientError as error:
        return error.response["Error"]["Code"]
    return "OK"


def leftover_blocks(nodes) -> list:
    return [path for node in nodes for path in block_files(node.data_dir)]


def empty_and_delete(client, bucket: str) -> None:
    """Remove a bucket that survived a race, with whatever it holds."""
    if error_code(lambda: client.head_bucket(Bucket=bucket)) != "OK":
        return
    for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        client.delete_object(Bucket=bucket, Key=item["Key"])
    client.delete_bucket(Bucket=bucket)


def check_put_delete_outcome(put: str, delete: str, reader, bucket: str, data: bytes) -> None:
    """Exactly one side wins; an acknowledged PUT's object is there to read."""
    assert (put, delete) in (("OK", "BucketNotEmpty"), ("NoSuchBucket", "OK")), (put, delete)
    if put == "OK":
        assert reader.get_object(Bucket=bucket, Key="k")["Body"].read() == data


def race_put_and_delete_bucket(writer, deleter, reader, prefix: str) -> None:
    """PUT a 2 MiB object and DeleteBucket a few ms later, many times over."""
    with ThreadPoolExecutor(2) as pool:
        for trial in range(RACE_TRIALS):
            bucket = f"{prefix}-{trial}"
            writer.create_bucket(Bucket=bucket)
            data = os.urandom(PUT_SIZE)
            put = pool.submit(
                error_code, lambda b=bucket, d=data: writer.put_object(Bucket=b, Key="k", Body=d)
            )
            time.sleep(0.002 * (trial % 10))
            delete = pool.submit(error_code, lambda b=bucket: deleter.delete_bucket(Bucket=b))
            check_put_delete_outcome(put.result(), delete.result(), reader, bucket, data)
            empty_and_delete(writer, bucket)


def delete_bucket_mid_put(writer_node, deleter, bucket: str) -> tuple[int, str]:
    """DeleteBucket while a PUT's body is still arriving: (PUT status, DeleteBucket code)."""
    head, body = raw_request(writer_node, "PUT", f"/{bucket}/k", os.urandom(PUT_SIZE))
    with socket.create_connection(("127.0.0.1", writer_node.s3_port)) as sock:
        sock.sendall(head + body[: MIB + 12345])
        time.sleep(0.3)
        deleted = error_code(lambda: deleter.delete_bucket(Bucket=bucket))
        sock.sendall(body[MIB + 12345 :])
        return status_of(sock), deleted


def test_delete_bucket_during_a_put_never_loses_the_acknowledged_object(own_server, s3_processes):
    s3 = start_configured(own_server, block_gc_delay_secs=0, s3_processes=s3_processes)
    s3.create_bucket(Bucket="mid")
    put_status, deleted = delete_bucket_mid_put(own_server, s3, "mid")
    if put_status == 200:
        assert deleted == "BucketNotEmpty"
        assert len(s3.get_object(Bucket="mid", Key="k")["Body"].read()) == PUT_SIZE
        empty_and_delete(s3, "mid")
    else:
        assert (put_status, deleted) == (404, "OK")
    race_put_and_delete_bucket(s3, own_server.client(), s3, "race")
    wait_until(lambda: not leftover_blocks([own_server]), what="every block to be collected")


def test_delete_bucket_during_a_complete_never_loses_the_object(own_server, s3_processes):
    s3 = start_configured(own_server, block_gc_delay_secs=0, s3_processes=s3_processes)
    s3.create_bucket(Bucket="mpu")
    upload_id, bodies, etags = multipart_with_parts(s3, "mpu", "big", {1: 5 * MIB, 2: MIB})
    head, body = raw_request(
        own_server, "POST", f"/mpu/big?uploadId={upload_id}", complete_xml(etags, (1, 2))
    )
    with socket.create_connection(("127.0.0.1", own_server.s3_port)) as sock:
        sock.sendall(head + body[:10])
        time.sleep(0.3)
        deleted = error_code(lambda: s3.delete_bucket(Bucket="mpu"))
        sock.sendall(body[10:])
        completed = status_of(sock)
    if completed == 200:
        assert deleted == "BucketNotEmpty"
        assert s3.get_object(Bucket="mpu", Key="big")["Body"].read() == bodies[1] + bodies[2]
        empty_and_delete(s3, "mpu")
    else:
        assert (completed, deleted) == (404, "OK")
    wait_until(lambda: not leftover_blocks([own_server]), what="every block to be collected")


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory) -> Iterator[Cluster]:
    cluster = start_cluster(
        tmp_path_factory.mktemp("races"), 3, ["dc1", "dc2", "dc3"], block_gc_delay_secs=0
    )
    yield cluster
    cluster.stop()


def test_delete_bucket_on_another_node_during_a_put_never_loses_the_object(cluster3):
    nodes = cluster3.nodes
    writer, deleter = nodes[0].client(), nodes[1].client()
    writer.create_bucket(Bucket="mid")
    put_status, deleted = delete_bucket_mid_put(nodes[0], deleter, "mid")
    if put_status == 200:
        assert deleted == "BucketNotEmpty"
        assert len(nodes[2].client().get_object(Bucket="mid", Key="k")["Body"].read()) == PUT_SIZE
        empty_and_delete(writer, "mid")
    else:
        assert (put_status, deleted) == (404, "OK")
    race_put_and_delete_bucket(writer, deleter, nodes[2].client(), "race")
    wait_until(lambda: not leftover_blocks(nodes), timeout=60, what="every block to be collected")


# ---- two keys creating one bucket name ------------------------------------

CREATE_TRIALS = 20


def key_with_bucket_rights(node, name: str) -> tuple[str, str]:
    created = admin_call(node, "POST", "/v1/keys", {"name": name, "allow_create_bucket": True})
    return created["key_id"], created["secret"]


def race_create_bucket(clients: list, name: str) -> list[str]:
    start = threading.Barrier(len(clients))

    def create(client) -> str:
        start.wait()
        return error_code(lambda: client.create_bucket(Bucket=name))

    with ThreadPoolExecutor(len(clients)) as pool:
        return list(pool.map(create, clients))


def check_one_owner(clients: list, codes: list[str], name: str) -> None:
    """At most one creator is told it made the bucket, and only it can write to it."""
    assert codes.count("OK") <= 1, codes
    for client, code in zip(clients, codes, strict=True):
        if code == "OK":
            client.put_object(Bucket=name, Key="mine", Body=b"x")
        else:
            assert code in ("BucketAlreadyExists", "OperationAborted"), codes
            assert error_code(lambda c=client: c.put_object(Bucket=name, Key="no", Body=b"")) in (
                "AccessDenied",
                "NoSuchBucket",
            )


def test_two_keys_creating_one_bucket_name_never_both_win(own_server, s3_processes):
    start_configured(own_server, s3_processes=s3_processes)
    clients = [
        own_server.client(access_key=key_id, secret_key=secret)
        for key_id, secret in (key_with_bucket_rights(own_server, f"k{i}") for i in range(2))
    ]
    for trial in range(CREATE_TRIALS):
        codes = race_create_bucket(clients, f"claim-{trial}")
        check_one_owner(clients, codes, f"claim-{trial}")
        # One node serialises the creates of a name: exactly one wins there.
        assert sorted(codes) == ["BucketAlreadyExists", "OK"], codes


def test_two_keys_creating_one_bucket_name_on_two_nodes_never_both_win(cluster3):
    nodes = cluster3.nodes
    keys = [key_with_bucket_rights(nodes[0], f"k{i}") for i in range(2)]
    clients = [
        node.client(access_key=key_id, secret_key=secret)
        for node, (key_id, secret) in zip(nodes[:2], keys, strict=True)
    ]
    for client in clients:  # each key is known on the node it uses
        wait_until(lambda c=client: error_code(c.list_buckets) == "OK", what="the key")
    for trial in range(CREATE_TRIALS):
        codes = race_create_bucket(clients, f"claim-{trial}")
        check_one_owner(clients, codes, f"claim-{trial}")
