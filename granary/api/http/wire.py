"""Response heads as bytes, and the default responses for errors."""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus

from granary.api.http.types import Request, Response

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CHUNKED_END = b"0\r\n\r\n"

_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n" for status in HTTPStatus
}
_SERVER_OWNED = frozenset({"content-length", "transfer-encoding", "connection"})


def _status_line(status: int) -> str:
    line = _STATUS_LINES.get(status)
    if line is None:
        if type(status) is not int or not 100 <= status <= 999:
            raise ValueError(f"invalid HTTP status {status!r}")
        line = f"HTTP/1.1 {status} \r\n"
    return line


class _DateLine:
    """The Date header line, rebuilt at most once per second."""

    __slots__ = ("line", "second")

    def __init__(self) -> None:
        self.second = -1
        self.line = ""

    def current(self) -> str:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.line = f"Date: {formatdate(now, usegmt=True)}\r\n"
        return self.line


_date_line = _DateLine()


def encode_head(
    status: int,
    headers: list[tuple[str, str]],
    *,
    content_length: int | None,
    chunked: bool,
    keep_alive: bool,
    http10: bool,
) -> tuple[bytes, bool]:
    """The status line and headers of a response, and whether the connection stays open.

    Framing and connection management belong to the server: Content-Length,
    Transfer-Encoding and Connection fields from the handler are dropped, except
    that "Connection: close" is honoured. A Date field is added unless given.
    Raises ValueError on a field that would split the head (CR or LF) or that
    is not latin-1.
    """
    lines = [_status_line(status)]
    has_date = False
    for name, value in headers:
        key = name.lower()
        if key in _SERVER_OWNED:
            if key == "connection" and "close" in value.lower():
                keep_alive = False
            continue
        if key == "date":
            has_date = True
        lines.append(f"{name}: {value}\r\n")
    if not has_date:
        lines.append(_date_line.current())
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}\r\n")
    elif chunked:
        lines.append("Transfer-Encoding: chunked\r\n")
    if not keep_alive:
        lines.append("Connection: close\r\n")
    elif http10:
        lines.append("Connection: keep-alive\r\n")
    lines.append("\r\n")
    text = "".join(lines)
    if text.count("\n") != len(lines) or text.count("\r") != len(lines):
        raise ValueError("CR or LF inside a response header")
    return text.encode("latin-1"), keep_alive


def frame_response(
    request: Request, response: Response, keep_alive: bool
) -> tuple[bytes, bool, int | None, bool, bool]:
    """How `response` goes on the wire as the answer to `request`.

    Returns (head, whether a body follows the head, the body length or None,
    whether it is chunked, whether the connection stays open). A bytes body
    is sent whole whatever `content_length` says, except for HEAD, where
    `content_length` (else the body length) is announced and nothing is sent.
    """
    status = response.status
    body = response.body
    length = response.content_length
    chunked = False
    send_body = request.method != "HEAD"
    if status < 200 or status == 204:
        send_body = False
        length = None
    elif status == 304:
        send_body = False
    elif isinstance(body, (bytes, bytearray, memoryview)):
        if send_body or length is None:
            length = len(body)
    elif length is None:
        if request.http_version == "1.1":
            chunked = True
        else:
            keep_alive = False  # an HTTP/1.0 client reads to the end of the connection
    head, keep_alive = encode_head(
        status,
        response.headers,
        content_length=length,
        chunked=chunked,
        keep_alive=keep_alive,
        http10=request.http_version == "1.0",
    )
    return head, send_body, length, chunked, keep_alive


def encode_error(response: Response) -> bytes:
    """A whole error response that closes the connection."""
    body = response.body
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError("an error response needs a bytes body")
    head, _ = encode_head(
        response.status,
        response.headers,
        content_length=len(body),
        chunked=False,
        keep_alive=False,
        http10=False,
    )
    return head + body


def default_error_response(status: int, code: str, message: str) -> Response:
    """A tiny plain-text error, for servers that render none of their own."""
    return Response(
        status,
        [("Content-Type", "text/plain; charset=utf-8")],
        f"{code}: {message}\n".encode(),
    )


def default_exception_response(request: Request, exc: BaseException) -> Response:
    """A 500 that says nothing about the exception."""
    return default_error_response(500, "InternalError", "internal server error")
