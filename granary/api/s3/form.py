"""A streaming multipart/form-data parser for browser uploads (POST Object). Sans-IO.

Feed it the request body as it arrives and pull events. The fields before the
file are small: each is buffered whole and returned as a `Field`, and all the
bytes before the file part (preamble, part headers, field values) count
against one size cap. The file part is not buffered: its content comes out as
`FileData` pieces as soon as they cannot be the start of a boundary. As in S3,
whatever follows the file part is ignored.

Part headers follow the HTML form encoding (RFC 7578): a quoted parameter
ends at the next double quote, and backslashes are taken literally, so that a
filename such as `C:\\dir\\a.txt` keeps its backslashes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FILE_FIELD = "file"
DEFAULT_MAX_FIELDS_BYTES = 64 * 1024
MAX_BOUNDARY_LENGTH = 70

_BOUNDARY_PARAMETER = re.compile(r';\s*boundary\s*=\s*(?:"([^"]*)"|([^\s;]*))', re.IGNORECASE)
_DISPOSITION_PARAMETER = re.compile(r';\s*([^\s=;]+)\s*=\s*(?:"([^"]*)"|([^;]*))')
_TRANSPORT_PADDING = frozenset(b" \t")


class FormError(ValueError):
    """The body is not well-formed multipart/form-data, or its fields are too large.

    `too_large` tells the two apart: S3 answers them with different codes.
    """

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


@dataclass(frozen=True, slots=True)
class Field:
    """A form field before the file; the name as sent, the value decoded as UTF-8."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class FileStart:
    """The file part begins; `filename` is None when its part names none."""

    filename: str | None


@dataclass(frozen=True, slots=True)
class FileData:
    data: bytes


@dataclass(frozen=True, slots=True)
class FileEnd:
    """The file part is complete; the parser ignores the rest of the body."""


@dataclass(frozen=True, slots=True)
class FormEnd:
    """The form ended without a file part."""


Event = Field | FileStart | FileData | FileEnd | FormEnd

_PREAMBLE, _AFTER_BOUNDARY, _HEADERS, _FIELD, _FILE, _DONE = range(6)


def form_boundary(content_type: str | None) -> bytes | None:
    """The boundary of a `multipart/form-data` Content-Type; None if it is not one."""
    if content_type is None:
        return None
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "multipart/form-data":
        return None
    match = _BOUNDARY_PARAMETER.search(content_type)
    if match is None:
        return None
    boundary = match.group(1) if match.group(1) is not None else match.group(2)
    if not 0 < len(boundary) <= MAX_BOUNDARY_LENGTH or not boundary.isascii():
        return None
    return boundary.encode("ascii")


class FormParser:
    """Turns a multipart/form-data body into `Event`s.

    Call `feed` with each piece of the body, then `next_event` until it
    answers None (it needs more input); call `end_of_input` once the body is
    over. Raises `FormError` on a malformed or truncated body, or when the
    bytes before the file part exceed `max_fields_bytes`.
    """

    def __init__(
        self, boundary: bytes, *, max_fields_bytes: int = DEFAULT_MAX_FIELDS_BYTES
    ) -> None:
        # A delimiter is CRLF "--" boundary; the body's first one has no CRLF
        # before it, so the stream is read as if it started with one.
        self._delimiter = b"\r\n--" + boundary
        self._buffer = bytearray(b"\r\n")
        self._scan_from = 0
        self._state = _PREAMBLE
        self._eof = False
        self._field_name = ""
        self._max_fields_bytes = max_fields_bytes
        self._fields_bytes = -2  # the CRLF added above is not the client's

    def feed(self, data: bytes) -> None:
        if self._state != _DONE:
            self._buffer += data

    def end_of_input(self) -> None:
        self._eof = True

    def next_event(self) -> Event | None:
        """The next event, or None until more input is fed."""
        while True:
            state = self._state
            if state == _DONE:
                return None
            event: Event | None = None
            if state == _FILE:
                event = self._file_data()
            elif state == _FIELD:
                event = self._field()
            elif state == _HEADERS:
                event = self._headers()
            elif state == _AFTER_BOUNDARY:
                event = self._after_boundary()
            else:
                self._preamble()
            if event is not None:
                return event
            if self._state == state:
                if self._eof:
                    raise FormError("the body ended inside the form")
                if state != _FILE:
                    self._count_field_bytes(len(self._buffer))
                return None

    def _count_field_bytes(self, count: int) -> None:
        if self._fields_bytes + count > self._max_fields_bytes:
            raise FormError("the fields before the file are too large", too_large=True)

    def _find_delimiter(self) -> int:
        index = self._buffer.find(self._delimiter, self._scan_from)
        if index < 0:
            self._scan_from = max(0, len(self._buffer) - len(self._delimiter) + 1)
        return index

    def _consume(self, count: int) -> bytes:
        if self._state != _FILE:
            self._count_field_bytes(count)
            self._fields_bytes += count
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        self._scan_from = 0
        return data

    def _preamble(self) -> None:
        index = self._find_delimiter()
        if index >= 0:
            self._consume(index + len(self._delimiter))
            self._state = _AFTER_BOUNDARY

    def _after_boundary(self) -> FormEnd | None:
        buffer = self._buffer
        if buffer.startswith(b"--"):
            self._state = _DONE
            self._buffer.clear()
            return FormEnd()
        line_end = buffer.find(b"\r\n")
        if line_end < 0:
            if len(buffer) >= 2 and buffer[0] not in _TRANSPORT_PADDING:
                raise FormError("a boundary is followed by neither CRLF nor '--'")
            return None
        if any(byte not in _TRANSPORT_PADDING for byte in buffer[:line_end]):
            raise FormError("a boundary is followed by neither CRLF nor '--'")
        self._consume(line_end + 2)
        self._state = _HEADERS
        return None

    def _headers(self) -> FileStart | None:
        buffer = self._buffer
        if buffer.startswith(b"\r\n"):
            raise FormError("a part has no Content-Disposition")
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        block = self._consume(end + 4)[:end]
        name, filename = _parse_part_headers(block)
        if name.lower() == FILE_FIELD:
            self._state = _FILE
            return FileStart(filename)
        self._field_name = name
        self._state = _FIELD
        return None

    def _field(self) -> Field | None:
        index = self._find_delimiter()
        if index < 0:
            return None
        raw = self._consume(index)
        self._consume(len(self._delimiter))
        self._state = _AFTER_BOUNDARY
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FormError(f"the value of {self._field_name!r} is not UTF-8") from None
        return Field(self._field_name, value)

    def _file_data(self) -> FileData | FileEnd | None:
        index = self._find_delimiter()
        if index == 0:
            self._state = _DONE
            self._buffer.clear()
            return FileEnd()
        if index > 0:
            return FileData(self._consume(index))
        # Everything but a tail that may begin a delimiter can go out now.
        safe = len(self._buffer) - len(self._delimiter) + 1
        if safe > 0:
            return FileData(self._consume(safe))
        return None


def _parse_part_headers(block: bytes) -> tuple[str, str | None]:
    """(field name, filename) from the header lines of one part."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        raise FormError("part headers are not UTF-8") from None
    disposition = None
    for line in text.split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon:
            raise FormError("a part header has no colon")
        if name.strip().lower() == "content-disposition":
            disposition = value.strip()
    if disposition is None:
        raise FormError("a part has no Content-Disposition")
    kind, _, parameters = disposition.partition(";")
    if kind.strip().lower() != "form-data":
        raise FormError("a part is not form-data")
    found: dict[str, str] = {}
    for match in _DISPOSITION_PARAMETER.finditer(";" + parameters):
        quoted, bare = match.group(2), match.group(3)
        found.setdefault(match.group(1).lower(), quoted if quoted is not None else bare.strip())
    field_name = found.get("name")
    if not field_name:
        raise FormError("a part has no field name")
    return field_name, found.get("filename")
