"""S3 additional checksums: streaming digests, header names and composites.

A checksum object is fed whole blocks in order; it may run on a worker
thread, but its updates must not overlap. Digests are big-endian, as S3
sends them base64-encoded in `x-amz-checksum-*` headers.

This module sits in the bottom layer, so it cannot raise the S3 API's
`S3Error`; a bad checksum request raises `ChecksumRequestError`, which the
S3 layer answers as `InvalidRequest` with the same message.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Callable, Mapping

from awscrt import checksums as crt

ALGORITHMS = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")

_HEADER_PREFIX = "x-amz-checksum-"
# `x-amz-checksum-<suffix>` headers that carry no checksum value.
_NON_VALUE_SUFFIXES = frozenset({"algorithm", "type", "mode"})
_MULTIPLE_CHECKSUMS = (
    "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
)


class ChecksumRequestError(ValueError):
    """A request's checksum headers are contradictory or name an unsupported algorithm."""


class Checksum:
    """A running checksum; subclasses provide `update` and `digest`."""

    __slots__ = ("algorithm",)

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm

    def update(self, data: bytes | bytearray) -> None:
        raise NotImplementedError

    def digest(self) -> bytes:
        raise NotImplementedError

    def b64(self) -> str:
        """The digest as S3 writes it in headers and XML."""
        return base64.b64encode(self.digest()).decode("ascii")


class _CrcChecksum(Checksum):
    __slots__ = ("_crc", "_function", "_width")

    def __init__(
        self, algorithm: str, function: Callable[[bytes | bytearray, int], int], width: int
    ) -> None:
        super().__init__(algorithm)
        self._function = function
        self._width = width
        self._crc = 0

    def update(self, data: bytes | bytearray) -> None:
        self._crc = self._function(data, self._crc)

    def digest(self) -> bytes:
        return self._crc.to_bytes(self._width, "big")


class _HashlibChecksum(Checksum):
    __slots__ = ("_hash",)

    def __init__(self, algorithm: str) -> None:
        super().__init__(algorithm)
        self._hash = hashlib.new(algorithm)

    def update(self, data: bytes | bytearray) -> None:
        self._hash.update(data)

    def digest(self) -> bytes:
        return self._hash.digest()


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}")


def new_checksum(algorithm: str) -> Checksum:
    """A fresh checksum for one of `ALGORITHMS` (ValueError otherwise)."""
    if algorithm == "crc32":
        return _CrcChecksum(algorithm, zlib.crc32, 4)
    if algorithm == "crc32c":
        return _CrcChecksum(algorithm, crt.crc32c, 4)
    if algorithm == "crc64nvme":
        return _CrcChecksum(algorithm, crt.crc64nvme, 8)
    _check_algorithm(algorithm)
    return _HashlibChecksum(algorithm)


def checksum_header_name(algorithm: str) -> str:
    """The header carrying this algorithm's value, e.g. `x-amz-checksum-crc32`."""
    _check_algorithm(algorithm)
    return _HEADER_PREFIX + algorithm


def checksum_element_name(algorithm: str) -> str:
    """The XML element carrying this algorithm's value, e.g. `ChecksumCRC32`."""
    _check_algorithm(algorithm)
    return "Checksum" + algorithm.upper()


def _supported(algorithm: str, message: str) -> str:
    if algorithm not in ALGORITHMS:
        raise ChecksumRequestError(message)
    return algorithm


def requested_checksum(headers: Mapping[str, str]) -> tuple[str, str | None] | None:
    """Which checksum a request asks the server to verify or compute.

    Returns `(algorithm, value)` when an `x-amz-checksum-<alg>` header
    carries the value, `(algorithm, None)` when the value comes later in an
    aws-chunked trailer (`x-amz-trailer`) or the request only names the
    algorithm (`x-amz-sdk-checksum-algorithm`, or `x-amz-checksum-algorithm`
    on CreateMultipartUpload), and None when no checksum is involved.

    The value is returned as sent, unvalidated: a malformed one simply fails
    to match the computed checksum, which S3 answers with BadDigest.
    Raises `ChecksumRequestError` for an unsupported algorithm, for more than
    one checksum, or when the named algorithm differs from the one given.
    """
    value_headers: list[tuple[str, str]] = []
    trailer_algorithm: str | None = None
    named: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith(_HEADER_PREFIX):
            suffix = lower[len(_HEADER_PREFIX) :]
            if suffix == "algorithm":
                named[lower] = value.strip().lower()
            elif suffix not in _NON_VALUE_SUFFIXES:
                value_headers.append((suffix, value))
        elif lower == "x-amz-sdk-checksum-algorithm":
            named[lower] = value.strip().lower()
        elif lower == "x-amz-trailer":
            trailer = value.strip().lower()
            if trailer.startswith(_HEADER_PREFIX):
                trailer_algorithm = trailer[len(_HEADER_PREFIX) :]

    sources = len(value_headers) + (trailer_algorithm is not None)
    if sources > 1:
        raise ChecksumRequestError(_MULTIPLE_CHECKSUMS)

    given: tuple[str, str | None] | None = None
    if value_headers:
        algorithm, value = value_headers[0]
        given = (_supported(algorithm, f"Unsupported checksum algorithm: {algorithm}"), value)
    elif trailer_algorithm is not None:
        message = "The value specified in the x-amz-trailer header is not supported"
        given = (_supported(trailer_algorithm, message), None)

    for header, algorithm in named.items():
        message = f"Value for {header} header is invalid."
        _supported(algorithm, message)
        if given is None:
            given = (algorithm, None)
        elif given[0] != algorithm:
            raise ChecksumRequestError(message)
    return given


def composite_checksum(algorithm: str, part_digests: list[bytes]) -> str:
    """S3's checksum of a multipart object: `b64(H(d1 || d2 || ...))-N`.

    `part_digests` are the raw digests of the parts, in part-number order.
    """
    checksum = new_checksum(algorithm)
    for digest in part_digests:
        checksum.update(digest)
    return f"{checksum.b64()}-{len(part_digests)}"


_COMBINE = {
    "crc32": (crt.combine_crc32, 4),
    "crc32c": (crt.combine_crc32c, 4),
    "crc64nvme": (crt.combine_crc64nvme, 8),
}


def supports_full_object(algorithm: str) -> bool:
    """Whether parts' checksums can be combined into the whole object's (CRCs only)."""
    return algorithm in _COMBINE


def combined_checksum(algorithm: str, parts: list[tuple[bytes, int]]) -> str:
    """The checksum of a whole object from its parts' (digest, length), for CRCs.

    S3 calls this the FULL_OBJECT checksum of a multipart upload.
    """
    combine, width = _COMBINE[algorithm]
    crc = 0
    for digest, length in parts:
        crc = combine(crc, int.from_bytes(digest, "big"), length)
    return base64.b64encode(crc.to_bytes(width, "big")).decode("ascii")
