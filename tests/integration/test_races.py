"""Races between writers of one key or upload: answers stay right, nothing leaks."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import block_files, signed_request_headers, start_configured, wait_until

MIB = 1 << 20


def complete_xml(etags: dict[int, str], numbers: tuple[int, ...]) -> bytes:
    parts = "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{etags[n]}</ETag></Part>" for n in numbers
    )
    return f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()


def raw_request(server, method: str, path: str, body: bytes) -> tuple[bytes, bytes]:
    """(head, body) of a signed request to send by hand, in pieces."""
    headers = signed_request_headers(
        method, f"{server.endpoint}{path}", {"Content-Length": str(len(body))}, body
    )
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + "\r\n").encode(), body


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


def test_abort_during_complete_never_destroys_the_completed_object(own_server):
    s3 = start_configured(own_server, block_gc_delay_secs=0)
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


def test_two_completes_with_different_parts_serve_what_the_etag_says(own_server):
    s3 = start_configured(own_server, block_gc_delay_secs=0)
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


def test_interrupted_uploads_leave_no_blocks_behind(own_server):
    s3 = start_configured(own_server, block_gc_delay_secs=0)
    s3.create_bucket(Bucket="cut")
    for index in range(8):
        head, body = raw_request(own_server, "PUT", f"/cut/k{index}", os.urandom(6 * MIB))
        with socket.create_connection(("127.0.0.1", own_server.s3_port)) as sock:
            sock.sendall(head + body[: (2 + index % 3) * MIB + 12345])
            time.sleep(0.2)
    wait_until(lambda: "Contents" not in s3.list_objects_v2(Bucket="cut"), what="an empty listing")
    data_dir = own_server.root / "data"
    wait_until(lambda: not block_files(data_dir), what="every block to be collected")


def test_concurrent_overwrites_of_one_key_leak_nothing(own_server):
    s3 = start_configured(own_server, block_gc_delay_secs=0)
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
