"""aws-chunked decoding: AWS's examples, a reference encoder, random splits, real clients."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import zlib
from datetime import UTC, datetime

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from granary.api.s3.chunked import ChunkedDecoder, decoder_for, parse_declared_trailers
from granary.api.s3.errors import S3Error
from granary.api.s3.sigv4 import (
    STREAMING_PAYLOAD,
    STREAMING_PAYLOAD_TRAILER,
    STREAMING_UNSIGNED_PAYLOAD_TRAILER,
    UNSIGNED_PAYLOAD,
    AuthContext,
    authenticate,
    derive_signing_key,
)

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
DOC_KEY = "AKIAIOSFODNN7EXAMPLE"
DOC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
DOC_CHUNK_SIGNATURES = (
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
)
# aws-c-auth's trailing-headers vector, chained on the doc example above.
CRT_TRAILERS = {"first": "1st", "second": "2nd", "third": "3rd"}
CRC32_TRAILER = frozenset({"x-amz-checksum-crc32"})
CRT_TRAILER_SIGNATURE = "df5735bd9f3295cd9386572292562fefc93ba94e80a0a1ddcbd652c4e0a75e6c"

AUTH = AuthContext(
    access_key_id="GKkey",
    region="garage",
    service="s3",
    date="20240102",
    timestamp="20240102T030405Z",
    scope="20240102/garage/s3/aws4_request",
    signing_key=derive_signing_key("secret", "20240102", "garage", "s3"),
    signature="9" * 64,
    content_sha256=STREAMING_PAYLOAD,
    presigned=False,
)


def raises(code: str, call, *args) -> S3Error:
    with pytest.raises(S3Error) as caught:
        call(*args)
    assert caught.value.code == code, caught.value
    return caught.value


def doc_auth(content_sha256: str = STREAMING_PAYLOAD) -> AuthContext:
    """The seed of AWS's chunked PUT example, verified through `authenticate`."""
    signed = (
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
        "x-amz-decoded-content-length;x-amz-storage-class"
    )
    headers = {
        "host": "s3.amazonaws.com",
        "x-amz-date": "20130524T000000Z",
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "x-amz-content-sha256": STREAMING_PAYLOAD,
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": "66560",
        "content-length": "66824",
        "authorization": f"AWS4-HMAC-SHA256 Credential={DOC_KEY}/20130524/us-east-1/s3/"
        f"aws4_request,SignedHeaders={signed},Signature={DOC_SEED}",
    }
    ctx = authenticate(
        "PUT",
        "/examplebucket/chunkObject.txt",
        [],
        headers,
        {DOC_KEY: DOC_SECRET}.get,
        datetime(2013, 5, 24, tzinfo=UTC),
        "us-east-1",
    )
    assert ctx is not None
    return AuthContext(**{**ctx.__dict__, "content_sha256": content_sha256})


def doc_body(final: bytes = b"\r\n") -> bytes:
    a, b, c = DOC_CHUNK_SIGNATURES
    return (
        f"10000;chunk-signature={a}\r\n".encode()
        + b"a" * 65536
        + f"\r\n400;chunk-signature={b}\r\n".encode()
        + b"a" * 1024
        + f"\r\n0;chunk-signature={c}\r\n".encode()
        + final
    )


def decode_all(decoder: ChunkedDecoder, stream: bytes, cuts: list[int] = ()) -> bytes:
    pieces: list[bytes] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        pieces += decoder.feed(stream[start:cut])
        start = cut
    decoder.finish()
    assert decoder.done
    return b"".join(pieces)


# --- reference encoder, written from the AWS documentation ---------------------------


def hmac_hex(auth: AuthContext, text: str) -> str:
    return hmac.new(auth.signing_key, text.encode(), hashlib.sha256).hexdigest()


def encode(
    chunks: list[bytes],
    *,
    auth: AuthContext | None = None,
    trailers: dict[str, str] | None = None,
    newline: bytes = b"\r\n",
) -> bytes:
    out = bytearray()
    previous = auth.signature if auth else ""
    for chunk in [*chunks, b""]:
        if auth:
            text = "\n".join(
                [
                    "AWS4-HMAC-SHA256-PAYLOAD",
                    auth.timestamp,
                    auth.scope,
                    previous,
                    EMPTY_SHA256,
                    hashlib.sha256(chunk).hexdigest(),
                ]
            )
            previous = hmac_hex(auth, text)
            out += f"{len(chunk):x};chunk-signature={previous}".encode() + newline
        else:
            out += f"{len(chunk):x}".encode() + newline
        if chunk:
            out += chunk + newline
    if trailers is not None:
        for name, value in trailers.items():
            out += f"{name}:{value}".encode() + newline
        if auth:
            canonical = "".join(f"{n}:{v}\n" for n, v in sorted(trailers.items()))
            text = "\n".join(
                [
                    "AWS4-HMAC-SHA256-TRAILER",
                    auth.timestamp,
                    auth.scope,
                    previous,
                    hashlib.sha256(canonical.encode()).hexdigest(),
                ]
            )
            out += f"x-amz-trailer-signature:{hmac_hex(auth, text)}".encode() + newline
    out += newline
    return bytes(out)


def split(payload: bytes, sizes: list[int]) -> list[bytes]:
    chunks, start = [], 0
    for size in sizes:
        if start >= len(payload):
            break
        chunks.append(payload[start : start + size])
        start += size
    if start < len(payload):
        chunks.append(payload[start:])
    return chunks


# --- AWS examples ----------------------------------------------------------------


def test_aws_doc_signed_chunked_put():
    decoder = ChunkedDecoder(doc_auth(), signed=True, trailer=False)
    assert decode_all(decoder, doc_body()) == b"a" * 66560
    assert decoder.decoded_length == 66560
    assert len(doc_body()) == 66824
    assert decoder.trailers == {}


def test_aws_signed_trailer_vector():
    body = doc_body(
        b"first:1st\r\nsecond:2nd\r\nthird:3rd\r\n"
        + f"x-amz-trailer-signature:{CRT_TRAILER_SIGNATURE}\r\n\r\n".encode()
    )
    decoder = ChunkedDecoder(
        doc_auth(STREAMING_PAYLOAD_TRAILER),
        signed=True,
        trailer=True,
        declared_trailers=frozenset(CRT_TRAILERS),
    )
    assert decode_all(decoder, body) == b"a" * 66560
    assert decoder.trailers == CRT_TRAILERS


def test_aws_signed_trailer_vector_rejects_a_changed_trailer():
    body = doc_body(
        b"first:1st\r\nsecond:2nd\r\nthird:4th\r\n"
        + f"x-amz-trailer-signature:{CRT_TRAILER_SIGNATURE}\r\n\r\n".encode()
    )
    decoder = ChunkedDecoder(
        doc_auth(STREAMING_PAYLOAD_TRAILER),
        signed=True,
        trailer=True,
        declared_trailers=frozenset(CRT_TRAILERS),
    )
    decoder.feed(body[:-2])
    raises("SignatureDoesNotMatch", decoder.feed, body[-2:])


def test_aws_doc_example_with_a_changed_byte_is_rejected():
    body = bytearray(doc_body())
    body[66000] = ord("b")
    decoder = ChunkedDecoder(doc_auth(), signed=True, trailer=False)
    first = decoder.feed(bytes(body[:65700]))
    assert first == [b"a" * 65536]
    raises("SignatureDoesNotMatch", decoder.feed, bytes(body[65700:]))


# --- random splits ----------------------------------------------------------------

MODES = [
    ("signed", True, False),
    ("signed-trailer", True, True),
    ("unsigned-trailer", False, True),
]


@settings(max_examples=300, deadline=None)
@given(
    payload=st.binary(max_size=2000),
    sizes=st.lists(st.integers(1, 600), max_size=8),
    mode=st.sampled_from(MODES),
    cut_seeds=st.lists(st.floats(0, 1), max_size=12),
    newline=st.sampled_from([b"\r\n", b"\n"]),
)
def test_random_splits_decode_to_the_payload(payload, sizes, mode, cut_seeds, newline):
    _, signed, trailer = mode
    trailers = {"x-amz-checksum-crc32": "AAAAAA=="} if trailer else None
    stream = encode(
        split(payload, sizes), auth=AUTH if signed else None, trailers=trailers, newline=newline
    )
    cuts = [int(seed * len(stream)) for seed in cut_seeds]
    decoder = ChunkedDecoder(
        AUTH if signed else None,
        signed=signed,
        trailer=trailer,
        declared_trailers=frozenset(trailers or {}),
    )
    assert decode_all(decoder, stream, cuts) == payload
    assert decoder.trailers == (trailers or {})
    assert decoder.decoded_length == len(payload)


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(min_size=1, max_size=300), mode=st.sampled_from(MODES))
def test_every_truncation_is_incomplete(payload, mode):
    _, signed, trailer = mode
    trailers = {"x-amz-checksum-sha256": "abc="} if trailer else None
    stream = encode(split(payload, [100]), auth=AUTH if signed else None, trailers=trailers)
    last_chunk_end = stream.index(b"\n", stream.rindex(b"\n0") + 1) + 1
    for cut in range(len(stream)):
        decoder = ChunkedDecoder(
            AUTH if signed else None,
            signed=signed,
            trailer=trailer,
            declared_trailers=frozenset(trailers or {}),
        )
        decoded = b"".join(decoder.feed(stream[:cut]))
        if cut < last_chunk_end:
            raises("IncompleteBody", decoder.finish)
            continue
        # Past the last chunk only whole trailer lines can be missing, and a
        # trailer x-amz-trailer announced must be there.
        try:
            decoder.finish()
        except S3Error as error:
            assert error.code in ("IncompleteBody", "MalformedTrailerError")
        else:
            assert decoded == payload


# --- signed data is held until verified, unsigned data streams ----------------------


def test_signed_chunk_data_is_released_only_when_complete():
    stream = encode([b"x" * 1000, b"y" * 10], auth=AUTH)
    decoder = ChunkedDecoder(AUTH, signed=True, trailer=False)
    header_end = stream.index(b"\r\n") + 2
    assert decoder.feed(stream[: header_end + 999]) == []
    assert b"".join(decoder.feed(stream[header_end + 999 : header_end + 1000])) == b"x" * 1000
    assert b"".join(decoder.feed(stream[header_end + 1000 :])) == b"y" * 10
    decoder.finish()


def test_unsigned_chunk_data_streams_immediately():
    stream = encode([b"x" * 1000], trailers={})
    decoder = ChunkedDecoder(None, signed=False, trailer=True)
    assert b"".join(decoder.feed(stream[:500])) == b"x" * (500 - len(b"3e8\r\n"))


# --- bad streams ------------------------------------------------------------------


def test_bad_chunk_signature():
    stream = encode([b"hello", b"world"], auth=AUTH)
    other = AuthContext(**{**AUTH.__dict__, "signature": "8" * 64})
    raises("SignatureDoesNotMatch", ChunkedDecoder(other, signed=True, trailer=False).feed, stream)


def test_reordered_chunks_break_the_chain():
    first = encode([b"hello"], auth=AUTH)
    second = encode([b"world"], auth=AUTH)
    spliced = second[: second.index(b"0;")] + first
    decoder = ChunkedDecoder(AUTH, signed=True, trailer=False)
    assert decoder.feed(spliced[: spliced.index(b"\r\n5;")]) == [b"world"]
    raises("SignatureDoesNotMatch", decoder.feed, spliced[spliced.index(b"\r\n5;") :])


def test_missing_chunk_signature_in_signed_stream():
    raises(
        "SignatureDoesNotMatch",
        ChunkedDecoder(AUTH, signed=True, trailer=False).feed,
        b"5\r\nhello\r\n",
    )


def test_missing_trailer_signature():
    stream = encode([b"hello"], auth=AUTH, trailers={"x-amz-checksum-crc32": "AAAAAA=="})
    stream = stream.replace(stream[stream.index(b"x-amz-trailer-signature") :], b"\r\n")
    decoder = ChunkedDecoder(AUTH, signed=True, trailer=True, declared_trailers=CRC32_TRAILER)
    raises("SignatureDoesNotMatch", decoder.feed, stream)


def test_bad_trailer_signature():
    stream = encode([b"hello"], auth=AUTH, trailers={"x-amz-checksum-crc32": "AAAAAA=="})
    stream = stream.replace(b"AAAAAA==", b"AAAAAB==")
    decoder = ChunkedDecoder(AUTH, signed=True, trailer=True, declared_trailers=CRC32_TRAILER)
    raises("SignatureDoesNotMatch", decoder.feed, stream)


@pytest.mark.parametrize(
    "stream",
    [
        b"zz\r\n",
        b"0x10\r\nabc",
        b" 5\r\nhello\r\n",
        b"-5\r\n",
        b"+5\r\n",
        b"\r\n",
        b"12345678901234567\r\n",
        b"5\r\nhello world\r\n",
        b"5" * 5000,
    ],
)
def test_garbage_framing(stream):
    raises("InvalidArgument", ChunkedDecoder(None, signed=False, trailer=True).feed, stream)


@pytest.mark.parametrize("stream", [b"0\r\nnot a trailer\r\n", b"0\r\n:value\r\n"])
def test_garbage_trailer_lines(stream):
    decoder = ChunkedDecoder(None, signed=False, trailer=True, declared_trailers=CRC32_TRAILER)
    raises("MalformedTrailerError", decoder.feed, stream)


@pytest.mark.parametrize(
    "tail",
    [
        b"0\r\n\r\n",  # nothing after the last chunk
        b"0\r\nx-amz-checksum-sha256:abc=\r\n\r\n",  # another algorithm
        b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\nx-amz-checksum-sha1:abc=\r\n\r\n",  # one more
    ],
    ids=["missing", "other-algorithm", "undeclared-extra"],
)
def test_trailers_must_be_the_declared_ones(tail):
    decoder = ChunkedDecoder(None, signed=False, trailer=True, declared_trailers=CRC32_TRAILER)
    with pytest.raises(S3Error) as caught:
        decoder.feed(b"1\r\na\r\n" + tail)
        decoder.finish()
    assert (caught.value.code, caught.value.status) == ("MalformedTrailerError", 400)


def test_declared_trailer_with_a_framing_that_has_none():
    decoder = ChunkedDecoder(AUTH, signed=True, trailer=False, declared_trailers=CRC32_TRAILER)
    raises("MalformedTrailerError", decode_all, decoder, encode([b"abc"], auth=AUTH))


def test_parse_declared_trailers():
    assert parse_declared_trailers(None) == frozenset()
    assert parse_declared_trailers(" X-Amz-Checksum-CRC32 , x-amz-meta-a,") == {
        "x-amz-checksum-crc32",
        "x-amz-meta-a",
    }


def test_chunk_bigger_than_the_limit():
    decoder = ChunkedDecoder(None, signed=False, trailer=True, max_chunk_size=1024)
    raises("InvalidArgument", decoder.feed, b"401\r\n")
    assert ChunkedDecoder(None, signed=False, trailer=True, max_chunk_size=1024).feed(b"400\r\nab")


def test_trailers_refused_when_not_declared():
    stream = encode([b"hi"], auth=AUTH).replace(b"\r\n\r\n", b"\r\nx-amz-meta:1\r\n\r\n")
    raises("MalformedTrailerError", ChunkedDecoder(AUTH, signed=True, trailer=False).feed, stream)


def test_data_after_the_end():
    stream = encode([b"hi"], trailers={})
    decoder = ChunkedDecoder(None, signed=False, trailer=True)
    decoder.feed(stream)
    assert decoder.feed(b"\r\n\r\n") == []
    raises("InvalidArgument", decoder.feed, b"more")


def test_signed_decoder_needs_auth():
    with pytest.raises(ValueError):
        ChunkedDecoder(None, signed=True, trailer=False)


# --- what real clients send ---------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1000, 70_000])
def test_botocore_flexible_checksum_stream(size):
    payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    wrapper = AwsChunkedWrapper(
        io.BytesIO(payload),
        checksum_cls=Crc32Checksum,
        checksum_name="x-amz-checksum-crc32",
        chunk_size=16 * 1024,
    )
    stream = wrapper.read()
    decoder = decoder_for(STREAMING_UNSIGNED_PAYLOAD_TRAILER, None, declared_trailers=CRC32_TRAILER)
    assert decoder is not None
    assert decode_all(decoder, stream, [7, 100, len(stream) - 3]) == payload
    expected = base64.b64encode(zlib.crc32(payload).to_bytes(4, "big")).decode()
    assert decoder.trailers == {"x-amz-checksum-crc32": expected}


@pytest.mark.parametrize(
    ("tail", "trailers"),
    [
        (b"0\r\n\r\n", {}),
        (b"0\r\n", {}),
        (b"0\r\nx-amz-checksum-crc32c:wdBDMA==\r\n", {"x-amz-checksum-crc32c": "wdBDMA=="}),
        (
            b"0\r\nx-amz-checksum-crc32c: wdBDMA== \r\n\r\n\r\n",
            {"x-amz-checksum-crc32c": "wdBDMA=="},
        ),
    ],
)
def test_tolerated_endings_of_unsigned_trailer_streams(tail, trailers):
    decoder = ChunkedDecoder(
        None, signed=False, trailer=True, declared_trailers=frozenset(trailers)
    )
    assert decode_all(decoder, b"1;ext=1\r\na\r\n" + tail) == b"a"
    assert decoder.trailers == trailers


def test_signed_stream_without_final_empty_line():
    decoder = ChunkedDecoder(doc_auth(), signed=True, trailer=False)
    assert decode_all(decoder, doc_body(final=b"")) == b"a" * 66560


def test_decoder_for_picks_the_framing():
    assert decoder_for(UNSIGNED_PAYLOAD, AUTH) is None
    assert decoder_for(EMPTY_SHA256, AUTH) is None
    signed = decoder_for(STREAMING_PAYLOAD, AUTH)
    assert signed is not None
    assert decode_all(signed, encode([b"abc"], auth=AUTH)) == b"abc"
    with_trailer = decoder_for(STREAMING_PAYLOAD_TRAILER, AUTH, declared_trailers=CRC32_TRAILER)
    assert with_trailer is not None
    stream = encode([b"abc"], auth=AUTH, trailers={"x-amz-checksum-crc32": "AAAAAA=="})
    assert decode_all(with_trailer, stream) == b"abc"
    raises("AccessDenied", decoder_for, STREAMING_PAYLOAD, None)
