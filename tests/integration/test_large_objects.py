"""Large objects streamed through a real server: integrity, bounded memory, cut-off bodies.

The data is pseudo-random and deterministic, produced block by block by a
seekable file-like object, so neither the test nor boto3 ever holds a whole
object in memory. Throughputs are printed (see them with `pytest -s`), never
asserted.
"""

from __future__ import annotations

import functools
import hashlib
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import blake3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from conftest import ACCESS_KEY, SECRET_KEY, GranaryServer, node_pids

MIB = 1 << 20
GIB = 1 << 30
GENERATOR_BLOCK = MIB
SINGLE_PUT = TransferConfig(multipart_threshold=1 << 40)
# Growth of the server's resident memory allowed while 1 GiB goes through it:
# far below the object's size, so only a streaming server stays under it.
MAX_RSS_GROWTH = 200 * MIB


class PseudoRandomFile(io.RawIOBase):
    """`size` deterministic pseudo-random bytes, seekable, generated as they are read."""

    def __init__(self, size: int, seed: str) -> None:
        super().__init__()
        self.size = size
        self._seed = seed.encode()
        self._position = 0
        self._cached: tuple[int, bytes] = (-1, b"")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        origin = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        self._position = max(origin + offset, 0)
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and self._position < self.size:
            index, start = divmod(self._position, GENERATOR_BLOCK)
            block = self._block(index)
            count = min(len(view) - filled, len(block) - start)
            view[filled : filled + count] = block[start : start + count]
            filled += count
            self._position += count
        return filled

    def _block(self, index: int) -> bytes:
        if self._cached[0] != index:
            length = min(GENERATOR_BLOCK, self.size - index * GENERATOR_BLOCK)
            data = blake3.blake3(self._seed + index.to_bytes(8, "big")).digest(length=length)
            self._cached = (index, data)
        return self._cached[1]


def iter_blocks(size: int, seed: str, block_size: int) -> Iterator[bytes]:
    source = PseudoRandomFile(size, seed)
    while data := source.read(block_size):
        yield data


@functools.cache
def expected_md5(size: int, seed: str) -> str:
    digest = hashlib.md5()
    for block in iter_blocks(size, seed, 8 * MIB):
        digest.update(block)
    return digest.hexdigest()


def expected_multipart_etag(size: int, seed: str, part_size: int) -> str:
    part_digests = [hashlib.md5(part).digest() for part in iter_blocks(size, seed, part_size)]
    return f'"{hashlib.md5(b"".join(part_digests)).hexdigest()}-{len(part_digests)}"'


def report(what: str, size: int, seconds: float) -> None:
    print(f"\n{what}: {size / MIB:.0f} MiB in {seconds:.2f} s = {size / MIB / seconds:.0f} MiB/s")


def upload(s3, bucket: str, key: str, size: int, seed: str, config: TransferConfig) -> None:
    started = time.perf_counter()
    s3.upload_fileobj(PseudoRandomFile(size, seed), bucket, key, Config=config)
    report(f"upload {key}", size, time.perf_counter() - started)


def download_md5(s3, bucket: str, key: str) -> tuple[str, int]:
    """Stream an object down, hashing as it arrives; (md5 hex, bytes received)."""
    started = time.perf_counter()
    digest = hashlib.md5()
    received = 0
    for chunk in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(MIB):
        digest.update(chunk)
        received += len(chunk)
    report(f"download {key}", received, time.perf_counter() - started)
    return digest.hexdigest(), received


def assert_no_such_key(s3, bucket: str, key: str) -> None:
    with pytest.raises(ClientError) as caught:
        s3.head_object(Bucket=bucket, Key=key)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


# ---- 100 MiB round trips -------------------------------------------------


def test_100mib_single_put_round_trip(s3, bucket):
    size, seed = 100 * MIB, "single-put-100"
    upload(s3, bucket, "single", size, seed, SINGLE_PUT)
    head = s3.head_object(Bucket=bucket, Key="single")
    assert head["ContentLength"] == size
    assert head["ETag"] == f'"{expected_md5(size, seed)}"'
    assert download_md5(s3, bucket, "single") == (expected_md5(size, seed), size)


def test_100mib_multipart_round_trip(s3, bucket):
    size, seed, part_size = 100 * MIB, "multipart-100", 8 * MIB
    config = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size)
    upload(s3, bucket, "multi", size, seed, config)
    head = s3.head_object(Bucket=bucket, Key="multi")
    assert head["ContentLength"] == size
    assert head["ETag"] == expected_multipart_etag(size, seed, part_size)
    assert head["ETag"].endswith('-13"')
    assert download_md5(s3, bucket, "multi") == (expected_md5(size, seed), size)


# ---- bounded memory ------------------------------------------------------


def proc_status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"{field} not in /proc/{pid}/status")


def node_rss(pids: list[int], field: str = "VmRSS") -> int:
    """Summed over the node's processes (whichever of them serves the transfer)."""
    return sum(proc_status_bytes(pid, field) for pid in pids)


class RssSampler:
    """Samples the node's VmRSS every 50 ms in a thread and keeps the peak."""

    def __init__(self, pids: list[int], interval: float = 0.05) -> None:
        self.pids = pids
        self.interval = interval
        self.peak = node_rss(pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        # The kernel's high-water marks close any gap between two samples (their
        # sum bounds the processes' peak together from above).
        self.peak = max(self.peak, node_rss(self.pids, "VmHWM"))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, node_rss(self.pids))
            self._stop.wait(self.interval)


def measure_rss_growth(pids: list[int], baseline: int, action: Callable[[], object]) -> int:
    with RssSampler(pids) as sampler:
        action()
    growth = sampler.peak - baseline
    print(f"\nserver RSS: baseline {baseline / MIB:.0f} MiB, peak growth {growth / MIB:.0f} MiB")
    return growth


def test_1gib_put_and_get_keep_server_memory_bounded(own_server: GranaryServer):
    own_server.start()
    pids = node_pids(own_server)
    s3 = own_server.client()
    bucket, key, size, seed = "memory", "one-gib", GIB, "one-gib"
    s3.create_bucket(Bucket=bucket)
    # Warm the same paths up so lazily built state is already in the baseline.
    upload(s3, bucket, "warm-up", 8 * MIB, "warm-up", SINGLE_PUT)
    download_md5(s3, bucket, "warm-up")
    baseline = node_rss(pids)

    growth = measure_rss_growth(
        pids, baseline, lambda: upload(s3, bucket, key, size, seed, SINGLE_PUT)
    )
    assert growth < MAX_RSS_GROWTH

    downloaded: list[tuple[str, int]] = []
    growth = measure_rss_growth(
        pids, baseline, lambda: downloaded.append(download_md5(s3, bucket, key))
    )
    assert growth < MAX_RSS_GROWTH

    md5 = expected_md5(size, seed)
    assert downloaded == [(md5, size)]
    assert s3.head_object(Bucket=bucket, Key=key)["ETag"] == f'"{md5}"'
    s3.delete_object(Bucket=bucket, Key=key)
    assert_no_such_key(s3, bucket, key)


# ---- an upload cut off mid-body ------------------------------------------


def signed_put_head(server: GranaryServer, path: str, body: bytes) -> bytes:
    """The request line and SigV4-signed headers of a PUT of `body` to `path`."""
    host = f"127.0.0.1:{server.s3_port}"
    request = AWSRequest(
        "PUT",
        f"http://{host}{path}",
        data=body,
        headers={"Host": host, "Content-Length": str(len(body))},
    )
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    lines = [f"PUT {path} HTTP/1.1", *(f"{k}: {v}" for k, v in request.headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def send_put(server: GranaryServer, path: str, body: bytes, send: int) -> bytes:
    """PUT `body` declaring its full length but sending only its first `send` bytes.

    When the whole body is sent, returns the response's status line and headers;
    otherwise closes the connection right after the last byte sent and returns b"".
    """
    with socket.create_connection(("127.0.0.1", server.s3_port), timeout=30) as connection:
        connection.sendall(signed_put_head(server, path, body))
        connection.sendall(memoryview(body)[:send])
        if send < len(body):
            return b""
        response = b""
        while b"\r\n\r\n" not in response and (data := connection.recv(65536)):
            response += data
        return response


def test_upload_cut_off_mid_body_leaves_nothing_visible(server, s3, bucket):
    body = PseudoRandomFile(10 * MIB, "cut-off").read()
    # The same request, sent whole, is accepted: what follows fails only by the cut.
    response = send_put(server, f"/{bucket}/whole", body, len(body))
    assert response.startswith(b"HTTP/1.1 200 "), response
    s3.put_object(Bucket=bucket, Key="victim", Body=b"the previous version")

    for key in ("ghost", "victim"):
        send_put(server, f"/{bucket}/{key}", body, 3 * MIB)

    assert_no_such_key(s3, bucket, "ghost")
    assert s3.get_object(Bucket=bucket, Key="victim")["Body"].read() == b"the previous version"
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(entry["Key"], entry["Size"]) for entry in listed] == [
        ("victim", 20),
        ("whole", len(body)),
    ]
    # The server still takes uploads, of the same keys too.
    s3.put_object(Bucket=bucket, Key="ghost", Body=body)
    assert download_md5(s3, bucket, "ghost") == (hashlib.md5(body).hexdigest(), len(body))
