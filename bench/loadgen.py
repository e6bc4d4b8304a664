"""A lean S3 load generator: aiohttp, SigV4 with UNSIGNED-PAYLOAD, bodies sliced
from one reusable in-memory buffer, GET bodies counted and dropped.

Uploaded bytes are consecutive windows of one endless "virtual stream" that
wraps around a random buffer of odd length. Every object, and every block the
server cuts from it, is then distinct content (no dedup, no compression) until
256 GiB have been sent, while the client holds only ~65 MiB.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import os
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload
from yarl import URL

UNSIGNED = "UNSIGNED-PAYLOAD"
SIGNED_HEADERS = "host;x-amz-content-sha256;x-amz-date"
SLICE = 1 << 20
# Odd, so slice positions only repeat after 4096 * PERIOD bytes (all offsets are 4 KiB multiples).
PERIOD = (64 << 20) + 4097
_NEXT_TOKEN = re.compile(rb"<NextContinuationToken>([^<]*)</NextContinuationToken>")
_KEY_COUNT = re.compile(rb"<KeyCount>(\d+)</KeyCount>")


def keep_freed_memory() -> None:
    """Let glibc reuse freed response buffers instead of returning them to the kernel:
    fresh pages cost a page fault each (a host fault too, in a VM), which made
    copying GET bodies cost more than receiving them."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 16 << 20)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD


class S3Failure(Exception):
    """The server answered something other than what the benchmark expects."""


def encode(value: str, safe: str = "") -> str:
    """SigV4 URI encoding: everything but unreserved characters (and `safe`)."""
    return quote(value, safe=safe + "~")


class Signer:
    """AWS SigV4 header signing for S3 requests sent with UNSIGNED-PAYLOAD."""

    def __init__(self, key_id: str, secret: str, region: str = "us-east-1") -> None:
        self.key_id = key_id
        self.secret = secret
        self.region = region
        self._keys: dict[str, bytes] = {}

    def _signing_key(self, date: str) -> bytes:
        key = self._keys.get(date)
        if key is None:
            key = ("AWS4" + self.secret).encode()
            for part in (date, self.region, "s3", "aws4_request"):
                key = hmac.digest(key, part.encode(), "sha256")
            self._keys[date] = key
        return key

    def headers(self, method: str, host: str, path: str, query: str) -> dict[str, str]:
        """Signed headers for a request; `path` and `query` already SigV4-encoded."""
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        date = amz_date[:8]
        scope = f"{date}/{self.region}/s3/aws4_request"
        canonical = (
            f"{method}\n{path}\n{query}\nhost:{host}\nx-amz-content-sha256:{UNSIGNED}\n"
            f"x-amz-date:{amz_date}\n\n{SIGNED_HEADERS}\n{UNSIGNED}"
        )
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        text = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{digest}"
        signature = hmac.digest(self._signing_key(date), text.encode(), "sha256").hex()
        return {
            "x-amz-date": amz_date,
            "x-amz-content-sha256": UNSIGNED,
            "authorization": (
                f"AWS4-HMAC-SHA256 Credential={self.key_id}/{scope}, "
                f"SignedHeaders={SIGNED_HEADERS}, Signature={signature}"
            ),
        }


class DataSource:
    """Distinct upload bodies cut from one wrapping random buffer."""

    def __init__(self) -> None:
        raw = bytearray(os.urandom(PERIOD))
        raw += raw[:SLICE]  # any SLICE-long window starting before PERIOD is contiguous
        self.view = memoryview(raw)
        self.cursor = 0

    def take(self, size: int) -> int:
        """Reserve the next `size` bytes of the virtual stream; returns their start."""
        start = self.cursor
        self.cursor += size
        return start

    def slices(self, start: int, size: int) -> Iterable[memoryview]:
        position = start % PERIOD
        left = size
        while left:
            count = min(SLICE, left)
            yield self.view[position : position + count]
            left -= count
            position = (position + count) % PERIOD

    def md5(self, start: int, size: int) -> str:
        digest = hashlib.md5()
        for piece in self.slices(start, size):
            digest.update(piece)
        return digest.hexdigest()


class SlicePayload(Payload):
    """A request body of known length, written slice by slice without copies."""

    def __init__(self, source: DataSource, start: int, size: int) -> None:
        super().__init__(None, content_type="application/octet-stream")
        self._source = source
        self._start = start
        self._size = size

    async def write(self, writer: AbstractStreamWriter) -> None:
        for piece in self._source.slices(self._start, self._size):
            await writer.write(piece)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a benchmark body is binary")


class S3Client:
    """The few S3 calls the benchmark makes, on one aiohttp session.

    Every key (and listing prefix) is put under `prefix`, so that runs against a
    long-lived endpoint do not meet the objects of earlier runs.
    """

    def __init__(
        self, endpoint: str, signer: Signer, bucket: str, connections: int, prefix: str = ""
    ) -> None:
        self.base = endpoint.rstrip("/")
        self.host = URL(endpoint).raw_authority
        self.signer = signer
        self.bucket = bucket
        self.prefix = prefix
        self.source = DataSource()
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, keepalive_timeout=60),
            auto_decompress=False,
            read_bufsize=1 << 22,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=300),
        )

    async def close(self) -> None:
        await self.session.close()

    def _request(
        self, method: str, key: str | None, params: Sequence[tuple[str, str]] = (), **kwargs: Any
    ) -> Any:
        path = "/" + encode(self.bucket)
        if key is not None:
            path += "/" + encode(self.prefix + key, "/")
        query = "&".join(f"{encode(k)}={encode(v)}" for k, v in sorted(params))
        headers = self.signer.headers(method, self.host, path, query)
        url = URL(self.base + path + ("?" + query if query else ""), encoded=True)
        return self.session.request(method, url, headers=headers, **kwargs)

    async def create_bucket(self) -> None:
        """Create the bucket; one that exists already is fine if these credentials can
        use it (409 BucketAlreadyOwnedByYou, or BucketAlreadyExists from stores that
        answer so to the owner too: a HEAD tells)."""
        async with self._request("PUT", None) as response:
            if response.status == 409:
                await response.read()
            else:
                await _expect(response, 200)
                return
        async with self._request("HEAD", None) as response:
            await _expect(response, 200)

    async def put(self, key: str, size: int) -> int:
        """Upload the next `size` bytes of the stream; returns the bytes sent."""
        await self.put_at(key, self.source.take(size), size)
        return size

    async def put_at(self, key: str, start: int, size: int) -> str:
        """Upload `size` bytes from stream position `start`; returns the ETag."""
        body = SlicePayload(self.source, start, size)
        async with self._request("PUT", key, data=body) as response:
            await _expect(response, 200)
            return response.headers.get("ETag", "").strip('"')

    async def get(self, key: str, digest: Any = None) -> int:
        """Download an object, counting (and optionally hashing) its bytes."""
        received = 0
        async with self._request("GET", key) as response:
            if response.status != 200:
                await _expect(response, 200)
            while chunk := (await response.content.readchunk())[0]:
                received += len(chunk)  # readchunk hands over buffered chunks without joining
                if digest is not None:
                    digest.update(chunk)
        return received

    async def head(self, key: str) -> int:
        async with self._request("HEAD", key) as response:
            await _expect(response, 200)
        return 0

    async def list_page(self, prefix: str, token: str | None) -> tuple[int, str | None]:
        """One ListObjectsV2 page of 100 keys: (key count, next continuation token)."""
        params = [("list-type", "2"), ("prefix", self.prefix + prefix), ("max-keys", "100")]
        if token is not None:
            params.append(("continuation-token", token))
        async with self._request("GET", None, params) as response:
            body = await _expect(response, 200)
        count = _KEY_COUNT.search(body)
        token_match = _NEXT_TOKEN.search(body)
        return (
            int(count.group(1)) if count else 0,
            token_match.group(1).decode() if token_match else None,
        )


async def _expect(response: aiohttp.ClientResponse, status: int) -> bytes:
    body = await response.read()
    if response.status != status:
        raise S3Failure(f"{response.method} {response.url}: {response.status} {body[:500]!r}")
    return body
