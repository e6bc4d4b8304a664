"""aws-chunked body decoding, sans-IO.

Three framings share one decoder:

- signed chunks (STREAMING-AWS4-HMAC-SHA256-PAYLOAD):
  `hex-size;chunk-signature=sig CRLF data CRLF`, ending with a 0-size chunk;
- signed chunks plus trailers (STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER): the
  0-size chunk is followed by `name:value CRLF` lines, one of them
  `x-amz-trailer-signature`, then an empty line;
- unsigned chunks plus trailers (STREAMING-UNSIGNED-PAYLOAD-TRAILER):
  `hex-size CRLF data CRLF`, the 0-size chunk, trailer lines, an empty line.

The trailers must be exactly those the request's `x-amz-trailer` header
announced, as S3 requires (MalformedTrailerError otherwise): a declared
checksum that never comes, or comes under another algorithm's name, is refused.

Each chunk signature chains on the previous one, starting from the request's
seed signature. A signed chunk is handed back only once its signature has
been checked, so at most one chunk is held in memory; unsigned data is
handed back as it arrives.

Tolerated variations: bare LF line ends, chunk extensions on unsigned chunks,
a body that stops right before its final empty line, and extra CR/LF after the
end. The final bytes real clients send (botocore, aws-c-auth, the Java SDK):
`0[;chunk-signature=...] CRLF` then the trailer lines, if any, then `CRLF`.
"""

from __future__ import annotations

import hashlib
import re
from enum import Enum, auto

from granary.api.s3.errors import S3Error
from granary.api.s3.sigv4 import (
    EMPTY_SHA256,
    STREAMING_PAYLOAD,
    STREAMING_PAYLOAD_TRAILER,
    STREAMING_UNSIGNED_PAYLOAD_TRAILER,
    AuthContext,
    canonical_header_value,
    sign,
    signatures_equal,
)

MAX_LINE_LENGTH = 4096
MAX_TRAILER_BYTES = 16 * 1024
TRAILER_SIGNATURE = "x-amz-trailer-signature"
CHUNK_SIGNATURE = "chunk-signature"

_HEX_SIZE = re.compile(r"[0-9a-fA-F]{1,16}")


class _State(Enum):
    HEADER = auto()
    DATA = auto()
    DATA_END = auto()
    TRAILER = auto()
    DONE = auto()


def _malformed_trailer() -> S3Error:
    return S3Error(
        "MalformedTrailerError",
        "The request contained trailing data that was not well-formed or did not conform "
        "to our published schema.",
        status=400,
    )


def parse_declared_trailers(value: str | None) -> frozenset[str]:
    """The trailer names an `x-amz-trailer` header announces (lower-case)."""
    if value is None:
        return frozenset()
    return frozenset(name.strip().lower() for name in value.split(",") if name.strip())


def _framing_error(message: str) -> S3Error:
    return S3Error("InvalidArgument", f"Malformed aws-chunked body: {message}")


def _incomplete() -> S3Error:
    return S3Error("IncompleteBody", "The request body terminated unexpectedly")


def _signature_mismatch(message: str) -> S3Error:
    return S3Error("SignatureDoesNotMatch", message)


def chunk_string_to_sign(auth: AuthContext, previous_signature: str, data_sha256: str) -> str:
    return "\n".join(
        (
            "AWS4-HMAC-SHA256-PAYLOAD",
            auth.timestamp,
            auth.scope,
            previous_signature,
            EMPTY_SHA256,
            data_sha256,
        )
    )


def canonical_trailers(trailers: dict[str, str]) -> bytes:
    """The signed form of trailers: `name:value\\n` sorted by name."""
    return "".join(f"{name}:{value}\n" for name, value in sorted(trailers.items())).encode(
        "latin-1"
    )


def trailer_string_to_sign(auth: AuthContext, previous_signature: str, canonical: bytes) -> str:
    return "\n".join(
        (
            "AWS4-HMAC-SHA256-TRAILER",
            auth.timestamp,
            auth.scope,
            previous_signature,
            hashlib.sha256(canonical).hexdigest(),
        )
    )


class ChunkedDecoder:
    """Incremental aws-chunked decoder; feed bytes split anywhere, then call `finish`.

    Once it has raised, a decoder is spent: the request must be answered with the error.
    """

    def __init__(
        self,
        auth: AuthContext | None,
        *,
        signed: bool,
        trailer: bool,
        declared_trailers: frozenset[str] = frozenset(),
        max_chunk_size: int = 16 * 1024 * 1024,
    ) -> None:
        if signed and auth is None:
            raise ValueError("signed aws-chunked decoding needs the request's AuthContext")
        self._auth = auth
        self._signed = signed
        self._trailer = trailer
        self._declared_trailers = declared_trailers
        self._max_chunk_size = max_chunk_size
        self._state = _State.HEADER
        self._line = bytearray()
        self._previous_signature = auth.signature if auth is not None else ""
        self._chunk_signature = ""
        self._remaining = 0
        self._hasher = hashlib.sha256()
        self._held: list[bytes] = []
        self._trailers: dict[str, str] = {}
        self._trailer_signature: str | None = None
        self._trailer_bytes = 0
        self._decoded_length = 0

    @property
    def trailers(self) -> dict[str, str]:
        """Lower-case trailer names -> values (without x-amz-trailer-signature)."""
        return dict(self._trailers)

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    @property
    def decoded_length(self) -> int:
        """Payload bytes decoded so far (to compare with x-amz-decoded-content-length)."""
        return self._decoded_length

    def feed(self, data: bytes) -> list[bytes]:
        """Consume body bytes; return the payload pieces that are now known good."""
        out: list[bytes] = []
        pos = 0
        end = len(data)
        while pos < end:
            if self._state is _State.DATA:
                pos = self._take_data(data, pos, out)
            elif self._state is _State.DONE:
                if data[pos:].strip(b"\r\n"):
                    raise _framing_error("data after the end of the body")
                break
            else:
                line, pos = self._take_line(data, pos)
                if line is not None:
                    self._on_line(line)
        return out

    def finish(self) -> None:
        """Check the body ended where it may end; raise IncompleteBody otherwise."""
        if self._state is _State.DONE:
            return
        if self._state is not _State.TRAILER or self._line:
            raise _incomplete()
        if self._trailer and self._signed and self._trailer_signature is None:
            raise _incomplete()
        self._end_of_trailers()

    # --- framing ---------------------------------------------------------

    def _take_line(self, data: bytes, pos: int) -> tuple[str | None, int]:
        newline = data.find(b"\n", pos)
        stop = len(data) if newline < 0 else newline
        if len(self._line) + stop - pos > MAX_LINE_LENGTH:
            raise _framing_error("line too long")
        self._line += data[pos:stop]
        if newline < 0:
            return None, len(data)
        line = bytes(self._line).removesuffix(b"\r").decode("latin-1")
        self._line.clear()
        return line, newline + 1

    def _take_data(self, data: bytes, pos: int, out: list[bytes]) -> int:
        take = min(self._remaining, len(data) - pos)
        piece = data if pos == 0 and take == len(data) else data[pos : pos + take]
        self._remaining -= take
        self._decoded_length += take
        if self._signed:
            self._hasher.update(piece)
            self._held.append(piece)
        else:
            out.append(piece)
        if self._remaining == 0:
            if self._signed:
                self._verify_chunk(self._hasher.hexdigest())
                out.extend(self._held)
                self._held = []
            self._state = _State.DATA_END
        return pos + take

    def _on_line(self, line: str) -> None:
        if self._state is _State.HEADER:
            self._on_chunk_header(line)
        elif self._state is _State.DATA_END:
            if line:
                raise _framing_error("chunk data is longer than its declared size")
            self._state = _State.HEADER
        elif self._state is _State.TRAILER:
            self._on_trailer_line(line)

    def _on_chunk_header(self, line: str) -> None:
        size_text, _, extensions = line.partition(";")
        if not _HEX_SIZE.fullmatch(size_text):
            raise _framing_error("invalid chunk size line")
        size = int(size_text, 16)
        if size > self._max_chunk_size:
            raise _framing_error(f"chunk of {size} bytes exceeds {self._max_chunk_size}")
        if self._signed:
            self._chunk_signature = self._parse_chunk_signature(extensions)
        if size:
            self._remaining = size
            self._hasher = hashlib.sha256()
            self._state = _State.DATA
            return
        if self._signed:
            self._verify_chunk(EMPTY_SHA256)
        self._state = _State.TRAILER

    @staticmethod
    def _parse_chunk_signature(extensions: str) -> str:
        for extension in extensions.split(";"):
            name, _, value = extension.partition("=")
            if name.strip() == CHUNK_SIGNATURE:
                return value.strip()
        raise _signature_mismatch("A chunk of a signed aws-chunked body has no chunk-signature")

    def _on_trailer_line(self, line: str) -> None:
        if not line:
            self._end_of_trailers()
            return
        if not self._trailer:
            raise _malformed_trailer()
        self._trailer_bytes += len(line)
        if self._trailer_bytes > MAX_TRAILER_BYTES:
            raise _framing_error("trailers too large")
        name, sep, value = line.partition(":")
        name = name.strip().lower()
        if not sep or not name:
            raise _malformed_trailer()
        value = canonical_header_value(value)
        if name == TRAILER_SIGNATURE:
            if self._trailer_signature is not None:
                raise _framing_error("repeated trailer signature")
            self._trailer_signature = value
        elif name in self._trailers:
            self._trailers[name] += "," + value
        else:
            self._trailers[name] = value

    def _end_of_trailers(self) -> None:
        # S3 wants exactly the trailers x-amz-trailer announced: none missing, none other.
        if set(self._trailers) != self._declared_trailers:
            raise _malformed_trailer()
        if self._trailer and self._signed:
            self._verify_trailers()
        self._state = _State.DONE

    # --- signatures --------------------------------------------------------

    def _verify_chunk(self, data_sha256: str) -> None:
        assert self._auth is not None
        text = chunk_string_to_sign(self._auth, self._previous_signature, data_sha256)
        if not signatures_equal(sign(self._auth.signing_key, text), self._chunk_signature):
            raise _signature_mismatch(
                "The chunk signature we calculated does not match the one you provided."
            )
        self._previous_signature = self._chunk_signature

    def _verify_trailers(self) -> None:
        assert self._auth is not None
        if self._trailer_signature is None:
            raise _signature_mismatch("The trailer signature is missing.")
        canonical = canonical_trailers(self._trailers)
        text = trailer_string_to_sign(self._auth, self._previous_signature, canonical)
        if not signatures_equal(sign(self._auth.signing_key, text), self._trailer_signature):
            raise _signature_mismatch(
                "The trailer signature we calculated does not match the one you provided."
            )


def decoder_for(
    content_sha256: str,
    auth: AuthContext | None,
    *,
    declared_trailers: frozenset[str] = frozenset(),
    max_chunk_size: int = 16 * 1024 * 1024,
) -> ChunkedDecoder | None:
    """The decoder a request body needs given its x-amz-content-sha256, or None if not chunked.

    `declared_trailers` are the names x-amz-trailer announced: the body must end with them.
    """
    if content_sha256 == STREAMING_UNSIGNED_PAYLOAD_TRAILER:
        return ChunkedDecoder(
            auth,
            signed=False,
            trailer=True,
            declared_trailers=declared_trailers,
            max_chunk_size=max_chunk_size,
        )
    if content_sha256 not in (STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER):
        return None
    if auth is None:
        raise S3Error("AccessDenied", "A signed aws-chunked body needs a signed request")
    return ChunkedDecoder(
        auth,
        signed=True,
        trailer=content_sha256 == STREAMING_PAYLOAD_TRAILER,
        declared_trailers=declared_trailers,
        max_chunk_size=max_chunk_size,
    )
