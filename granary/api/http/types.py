"""The public types of the HTTP layer: headers, request, response, limits, callbacks."""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from granary.util.file_region import FileRegion

if TYPE_CHECKING:
    from granary.api.http.body import Body


def join_fields(items: list[tuple[str, str]]) -> dict[str, str]:
    """Name -> value, the values of a repeated field joined with ","."""
    joined = dict(items)
    if len(joined) == len(items):
        return joined
    joined = {}
    for name, value in items:
        previous = joined.get(name)
        joined[name] = value if previous is None else previous + "," + value
    return joined


class Headers:
    """Request headers: case-insensitive lookups, order and repeated fields preserved."""

    __slots__ = ("_items", "_joined")

    def __init__(self, items: list[tuple[str, str]], joined: dict[str, str] | None = None) -> None:
        """`items` are (lower-case name, value) pairs in arrival order.

        `joined` (lower-case name -> values joined with ",", see `join_fields`) may
        be passed by a caller that already built it, as the connection does.
        """
        self._items = items
        self._joined = join_fields(items) if joined is None else joined

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of `name`; several fields of that name are joined with ","."""
        return self._joined.get(name.lower(), default)

    def getall(self, name: str) -> list[str]:
        """Every value of `name`, one per field, in arrival order."""
        wanted = name.lower()
        return [value for key, value in self._items if key == wanted]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._joined

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, str]]:
        """(lower-case name, value as sent) for every field, in arrival order."""
        return list(self._items)

    def as_dict(self) -> dict[str, str]:
        """Lower-case name -> joined value."""
        return dict(self._joined)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(slots=True)
class Request:
    method: str
    target: str
    """The raw request-target as sent, e.g. "/bucket/a%20b?uploads&x=1"."""
    path: str
    """The path part of the target, still percent-encoded."""
    query_string: str
    """The raw part after "?", "" when there is none."""
    headers: Headers
    http_version: str
    client: tuple[str, int]
    body: Body


class BodyCutOff(Exception):
    """Raised by a response body iterator that cannot go on for a reason it expected
    (a storage node out of reach, not a bug).

    The status line is already sent, so the connection is closed, as S3 does,
    and the reason is logged in one line (a traceback is kept for bugs).
    """


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | AsyncIterable[bytes] | AsyncIterable[bytes | FileRegion] = b""
    """An iterator body may yield regions of open files: they are sent from the
    file (`sendfile`), never read into memory."""
    content_length: int | None = None
    """The length of an iterator body (chunked encoding is used when None), or the
    Content-Length to announce for a HEAD response whose body is not sent."""


@dataclass(slots=True)
class HttpLimits:
    max_header_bytes: int = 64 * 1024
    """Request line plus headers."""
    header_timeout: float = 30.0
    """Time to receive a whole request head, from its first byte (or from the connection)."""
    keepalive_timeout: float = 75.0
    """Idle time allowed between two requests."""
    body_timeout: float = 60.0
    """Longest stall while the handler waits for request body bytes."""
    write_timeout: float = 120.0
    """Longest stall of a client that does not take the response bytes."""
    max_buffered_body: int = 4 << 20
    """Reading stops when more request body bytes than this are unread."""
    linger_timeout: float = 2.0
    """After a final response, how long to discard input before closing, so that the
    client is not reset before it could read that response."""
    unproven_timeout: float = 5.0
    """The idle and head timeouts of a connection that has had no successful (below
    400) response yet, e.g. an unauthenticated client's: it must send each request
    head within this, from the connection or from its last (error) response."""
    max_connections: int | None = None
    """Open connections at most (None: no limit). At the limit a new connection
    replaces the oldest one that is idle without a successful response yet, or is
    closed at once if there is none."""


Handler = Callable[[Request], Awaitable[Response]]
ErrorRenderer = Callable[[int, str, str], Response]
"""(status, code, message) -> response, for errors found by the HTTP layer itself."""
HandlerExceptionHook = Callable[[Request, BaseException], Response]
