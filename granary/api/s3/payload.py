"""A request body as the S3 handlers see it: aws-chunked decoded and length-checked."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from concurrent.futures import Executor

from granary.api.http.body import Body, BodyError
from granary.api.http.types import Headers
from granary.api.s3.chunked import decoder_for, parse_declared_trailers
from granary.api.s3.errors import S3Error
from granary.api.s3.numbers import integer_argument
from granary.api.s3.sigv4 import (
    STREAMING_PAYLOAD,
    STREAMING_PAYLOAD_TRAILER,
    UNSIGNED_PAYLOAD,
    AuthContext,
)

READ_SIZE = 1 << 20
# Signed aws-chunked data is hashed while decoding; pieces this large are
# decoded on the thread pool to keep SHA-256 off the event loop.
DECODE_IN_THREAD_BYTES = 64 * 1024


class Payload:
    def __init__(
        self, body: Body, headers: Headers, auth: AuthContext | None, executor: Executor
    ) -> None:
        self._body = body
        self._executor = executor
        self.content_sha256 = headers.get("x-amz-content-sha256") or (
            auth.content_sha256 if auth is not None else UNSIGNED_PAYLOAD
        )
        self._decoder = decoder_for(
            self.content_sha256,
            auth,
            declared_trailers=parse_declared_trailers(headers.get("x-amz-trailer")),
        )
        if self._decoder is not None:
            declared = headers.get("x-amz-decoded-content-length")
            self.length = _parse_length(declared) if declared is not None else None
        else:
            self.length = body.expected_length
        self.trailers: dict[str, str] = {}

    @property
    def expected_sha256(self) -> str | None:
        """The hex SHA-256 the client signed for the whole body, if any."""
        value = self.content_sha256
        if len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower()):
            return value.lower()
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The decoded body, piece by piece; raises S3Error on a short or bad body."""
        received = 0
        loop = asyncio.get_running_loop()
        decoder = self._decoder
        signed = self.content_sha256 in (STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER)
        while True:
            try:
                raw = await self._body.read(READ_SIZE)
            except BodyError as exc:
                if exc.reason == "timeout":
                    raise S3Error("RequestTimeout") from None
                raise S3Error("IncompleteBody") from None
            if not raw:
                break
            if decoder is None:
                pieces = [raw]
            elif signed and len(raw) >= DECODE_IN_THREAD_BYTES:
                pieces = await loop.run_in_executor(self._executor, decoder.feed, raw)
            else:
                pieces = decoder.feed(raw)
            for piece in pieces:
                received += len(piece)
                if self.length is not None and received > self.length:
                    raise S3Error("IncompleteBody", "The body is longer than declared.")
                yield piece
        if decoder is not None:
            decoder.finish()
            self.trailers = decoder.trailers
        if self.length is not None and received != self.length:
            raise S3Error("IncompleteBody")

    async def chunks_within(self, max_bytes: int) -> AsyncIterator[bytes]:
        """The body's pieces; MaxMessageLengthExceeded as soon as it is over `max_bytes`."""
        if self.length is not None and self.length > max_bytes:
            raise S3Error("MaxMessageLengthExceeded")
        size = 0
        async for piece in self.chunks():
            size += len(piece)
            if size > max_bytes:
                raise S3Error("MaxMessageLengthExceeded")
            yield piece

    async def read_all(self, max_bytes: int) -> bytes:
        """The whole (small) body, checked against a signed SHA-256."""
        parts = [piece async for piece in self.chunks_within(max_bytes)]
        data = b"".join(parts)
        expected = self.expected_sha256
        if expected is not None and not hmac.compare_digest(
            hashlib.sha256(data).hexdigest(), expected
        ):
            raise S3Error("XAmzContentSHA256Mismatch")
        return data


def _parse_length(value: str) -> int:
    return integer_argument(
        value,
        "x-amz-decoded-content-length",
        message="x-amz-decoded-content-length must be an integer",
    )
