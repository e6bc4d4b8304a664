import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from granary.api.s3.form import (
    Field,
    FileData,
    FileEnd,
    FileStart,
    FormEnd,
    FormError,
    FormParser,
    form_boundary,
)

BOUNDARY = b"----WebKitFormBoundaryX3b9"


def part(name: str, value: bytes, extra: str = "") -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"{extra}\r\n'
    return b"--" + BOUNDARY + b"\r\n" + disposition.encode() + b"\r\n" + value + b"\r\n"


def form(*parts: bytes, file: bytes | None = None, filename: str = "a.txt") -> bytes:
    body = b"".join(parts)
    if file is not None:
        body += part("file", file, f'; filename="{filename}"')
    return body + b"--" + BOUNDARY + b"--\r\n"


def parse(body: bytes, pieces: list[int] | None = None, **options) -> list:
    """Every event of `body`, fed at the given cut points; file data joined."""
    parser = FormParser(BOUNDARY, **options)
    events: list = []
    cuts = [0, *(pieces or []), len(body)]
    for start, end in itertools.pairwise(cuts):
        parser.feed(body[start:end])
        while (event := parser.next_event()) is not None:
            if isinstance(event, FileData) and events and isinstance(events[-1], FileData):
                events[-1] = FileData(events[-1].data + event.data)
            else:
                events.append(event)
    parser.end_of_input()
    assert parser.next_event() is None
    return events


def test_fields_then_file():
    body = form(part("key", b"a/${filename}"), part("Policy", "é".encode()), file=b"content")
    assert parse(body) == [
        Field("key", "a/${filename}"),
        Field("Policy", "é"),
        FileStart("a.txt"),
        FileData(b"content"),
        FileEnd(),
    ]


def test_every_split_point_gives_the_same_events():
    body = form(part("key", b"k"), file=b"x\r\n--" + BOUNDARY[:-1] + b"\r\n--")
    expected = parse(body)
    for cut in range(1, len(body)):
        assert parse(body, [cut]) == expected
    assert parse(body, list(range(1, len(body)))) == expected


@given(
    content=st.lists(st.sampled_from([b"\r", b"\n", b"-", b"--", BOUNDARY[:5], b"z"])).map(
        b"".join
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_file_content_survives_any_chunking(content, cuts):
    body = form(part("key", b"k"), file=content)
    events = parse(body, sorted({c for c in cuts if c < len(body)}))
    data = b"".join(e.data for e in events if isinstance(e, FileData))
    assert data == content
    assert events[-1] == FileEnd()


def test_empty_file_and_missing_filename():
    assert parse(form(file=b"", filename="")) == [FileStart(""), FileEnd()]
    body = form(part("File", b"inline content"))
    assert parse(body) == [FileStart(None), FileData(b"inline content"), FileEnd()]


def test_filename_keeps_backslashes_and_quoted_semicolons():
    body = form(file=b"x", filename="C:\\dir\\a;b.txt")
    assert parse(body)[0] == FileStart("C:\\dir\\a;b.txt")


def test_preamble_padding_and_what_follows_the_file_are_ignored():
    body = (
        b"preamble\r\n--"
        + BOUNDARY
        + b" \t\r\nContent-Disposition: form-data; name=acl\r\nContent-Type: text/plain\r\n\r\n"
        + b"private\r\n"
        + form(file=b"data")
        + b"trailing garbage"
    )
    body = body.replace(b"--" + BOUNDARY + b"--\r\n", b"--" + BOUNDARY + b"\r\nnot a part", 1)
    assert parse(body) == [
        Field("acl", "private"),
        FileStart("a.txt"),
        FileData(b"data"),
        FileEnd(),
    ]


def test_form_without_file():
    assert parse(form(part("key", b"k"))) == [Field("key", "k"), FormEnd()]


def test_fields_over_the_cap():
    with pytest.raises(FormError) as caught:
        parse(form(part("policy", b"p" * 5000), file=b""), max_fields_bytes=4096)
    assert caught.value.too_large
    # Fields still unfinished when the cap is reached are refused without buffering more.
    parser = FormParser(BOUNDARY, max_fields_bytes=4096)
    parser.feed(part("policy", b"p" * 5000)[:4500])
    with pytest.raises(FormError):
        parser.next_event()


def test_large_file_is_not_counted_against_the_cap():
    body = form(part("key", b"k"), file=b"f" * 100_000)
    events = parse(body, max_fields_bytes=1024)
    assert events[2] == FileData(b"f" * 100_000)


def test_file_data_is_streamed_before_the_end():
    parser = FormParser(BOUNDARY)
    parser.feed(form(file=b"")[: -len(BOUNDARY) - 8])  # up to the file's (empty) content
    assert parser.next_event() == FileStart("a.txt")
    parser.feed(b"y" * 10_000)
    event = parser.next_event()
    assert isinstance(event, FileData)
    assert len(event.data) > 10_000 - len(BOUNDARY) - 4
    assert parser.next_event() is None


@pytest.mark.parametrize(
    "body",
    [
        b"--" + BOUNDARY + b"\r\nContent-Type: text/plain\r\n\r\nv\r\n",
        b"--" + BOUNDARY + b"\r\n\r\nv\r\n",
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; filename="a"\r\n\r\nv\r\n',
        b"--" + BOUNDARY + b"\r\nContent-Disposition: attachment; name=a\r\n\r\nv\r\n",
        b"--" + BOUNDARY + b"\r\nno colon here\r\n\r\nv\r\n",
        b"--" + BOUNDARY + b"xx\r\n",
        part("key", b"\xff\xfe"),
    ],
)
def test_malformed_parts(body):
    with pytest.raises(FormError) as caught:
        parse(body + b"--" + BOUNDARY + b"--\r\n")
    assert not caught.value.too_large


def test_truncated_bodies():
    whole = form(part("key", b"k"), file=b"data")
    for end in (0, 10, len(whole) // 2, len(whole) - len(BOUNDARY) - 6):
        with pytest.raises(FormError):
            parse(whole[:end])


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=abc", b"abc"),
        ('Multipart/Form-Data; charset=utf-8; BOUNDARY="a b:c"', b"a b:c"),
        ("multipart/form-data", None),
        ("multipart/form-data; boundary=", None),
        ("multipart/form-data; boundary=" + "b" * 71, None),
        ("multipart/mixed; boundary=abc", None),
        ("application/x-www-form-urlencoded", None),
        (None, None),
    ],
)
def test_form_boundary(content_type, boundary):
    assert form_boundary(content_type) == boundary
