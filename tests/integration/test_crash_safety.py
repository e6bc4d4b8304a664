"""Interrupted uploads, SIGKILL and restart: nothing half-written, nothing leaked."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time

from botocore.exceptions import BotoCoreError, ClientError
from conftest import block_files, signed_request_headers, start_configured, wait_until

MIB = 1 << 20


def send_partial_put(server, path: str, declared: int, sent: bytes) -> http.client.HTTPConnection:
    """Start a PUT whose body stops after `sent`; the connection stays open."""
    url = f"{server.endpoint}{path}"
    headers = signed_request_headers("PUT", url, {"Content-Length": str(declared)})
    connection = http.client.HTTPConnection("127.0.0.1", server.s3_port, timeout=30)
    connection.putrequest("PUT", path, skip_host=True, skip_accept_encoding=True)
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    connection.send(sent)
    return connection


def test_client_gone_mid_upload_leaves_nothing(own_server):
    s3 = start_configured(own_server, block_gc_delay_secs=0)
    s3.create_bucket(Bucket="crash")
    connection = send_partial_put(own_server, "/crash/cut", 8 * MIB, os.urandom(3 * MIB))
    time.sleep(0.5)
    connection.sock.close()
    s3.put_object(Bucket="crash", Key="other", Body=b"still serving")
    assert "Contents" in s3.list_objects_v2(Bucket="crash")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="crash")["Contents"]] == ["other"]
    data_dir = own_server.root / "data"
    wait_until(lambda: not block_files(data_dir), what="every block to be collected")


def test_sigkill_mid_put_then_restart_recovers(own_server):
    s3 = start_configured(own_server, block_gc_delay_secs=0)
    s3.create_bucket(Bucket="crash")
    kept = os.urandom(2 * MIB + 5)
    s3.put_object(Bucket="crash", Key="kept", Body=kept)
    connection = send_partial_put(own_server, "/crash/cut", 16 * MIB, os.urandom(5 * MIB))
    time.sleep(1.0)
    own_server.kill()
    connection.close()
    own_server.start()
    s3 = own_server.client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="crash")["Contents"]]
    assert keys == ["kept"]
    assert s3.get_object(Bucket="crash", Key="kept")["Body"].read() == kept
    with_kept_only = len(block_files(own_server.root / "data"))
    s3.delete_object(Bucket="crash", Key="kept")
    data_dir = own_server.root / "data"
    assert with_kept_only >= 1
    wait_until(lambda: not block_files(data_dir), what="every block to be collected")
    assert "Traceback" not in own_server.log()


def test_sigkill_during_multipart_upload_then_resume(own_server):
    s3 = start_configured(own_server, block_gc_delay_secs=0)
    s3.create_bucket(Bucket="mpu")
    upload_id = s3.create_multipart_upload(Bucket="mpu", Key="big")["UploadId"]
    part1 = os.urandom(5 * MIB)
    part2 = os.urandom(3 * MIB)
    etag1 = s3.upload_part(Bucket="mpu", Key="big", UploadId=upload_id, PartNumber=1, Body=part1)[
        "ETag"
    ]
    path = f"/mpu/big?partNumber=2&uploadId={upload_id}"
    connection = send_partial_put(own_server, path, len(part2), part2[: 2 * MIB])
    time.sleep(1.0)
    own_server.kill()
    connection.close()

    own_server.start()
    s3 = own_server.client()
    parts = s3.list_parts(Bucket="mpu", Key="big", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["ETag"]) for p in parts] == [(1, etag1)]
    etag2 = s3.upload_part(Bucket="mpu", Key="big", UploadId=upload_id, PartNumber=2, Body=part2)[
        "ETag"
    ]
    s3.complete_multipart_upload(
        Bucket="mpu",
        Key="big",
        UploadId=upload_id,
        MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": etag1}, {"PartNumber": 2, "ETag": etag2}]
        },
    )
    assert s3.get_object(Bucket="mpu", Key="big")["Body"].read() == part1 + part2
    s3.delete_object(Bucket="mpu", Key="big")
    data_dir = own_server.root / "data"
    wait_until(lambda: not block_files(data_dir), what="every block to be collected")


def test_restart_serves_the_same_data(own_server):
    s3 = start_configured(own_server, block_gc_delay_secs=0)
    s3.create_bucket(Bucket="persist")
    payloads = {f"k{i}": os.urandom(size) for i, size in enumerate([0, 10, 5000, 3 * MIB])}
    for key, data in payloads.items():
        s3.put_object(Bucket="persist", Key=key, Body=data)
    assert own_server.stop() == 0
    own_server.start()
    s3 = own_server.client()
    for key, data in payloads.items():
        assert s3.get_object(Bucket="persist", Key=key)["Body"].read() == data
    assert "persist" in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_sigterm_during_uploads_finishes_them_and_loses_nothing_acknowledged(own_server):
    """A pod's stop: SIGTERM while clients upload; the node stops taking requests,
    finishes those in flight, exits cleanly, and after the restart every write it
    acknowledged reads back."""
    s3 = start_configured(own_server)
    s3.create_bucket(Bucket="stopping")
    bodies = {f"k{n}": os.urandom(MIB + n) for n in range(400)}
    acknowledged: list[str] = []
    refused: list[str] = []
    stop_sent = threading.Event()

    def upload(keys: list[str]) -> None:
        client = own_server.client()
        for key in keys:
            try:
                client.put_object(Bucket="stopping", Key=key, Body=bodies[key])
            except (ClientError, BotoCoreError):
                refused.append(key)
                if stop_sent.is_set():
                    return
            else:
                acknowledged.append(key)

    keys = sorted(bodies)
    threads = [threading.Thread(target=upload, args=(keys[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(acknowledged) >= 8, what="uploads under way")
    stop_sent.set()
    assert own_server.stop(signal.SIGTERM) == 0
    for thread in threads:
        thread.join(timeout=60)
    assert "Traceback" not in own_server.log()
    own_server.start()
    s3 = own_server.client()
    for key in acknowledged:
        assert s3.get_object(Bucket="stopping", Key=key)["Body"].read() == bodies[key]
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket="stopping", MaxKeys=1000)["Contents"]}
    assert set(acknowledged) <= listed
    assert listed <= set(acknowledged) | set(refused)  # nothing half-written appears
