"""S3 XML: one vetted escape function, a small string builder and a guarded parser.

Responses are built as strings rather than through `xml.etree`, which is an
order of magnitude slower and silently turns `\\r` into `\\n`. Requests are
parsed by expat, which refuses a document as soon as a DTD starts, so neither
entity expansion nor external entities can ever be reached, and the parse is
bounded: it stops at the first element over the caller's budget, so a body of
millions of elements costs no more than one within the budget (see `XmlParser`).
"""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as ET
import xml.parsers.expat
from collections.abc import Iterable
from typing import TypeAlias

from granary.api.s3.errors import S3Error

S3_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
DEFAULT_MAX_XML_BYTES = 1 << 20
DEFAULT_MAX_XML_ELEMENTS = 1_000
FEED_CHARS = 64 * 1024
"""The parser is fed this much at a time, and checks its limits in between."""
MAX_SILENT_FEEDS = 4
"""A body that yields no element or text for this many feeds in a row is refused:
no S3 request holds a token (a tag, a comment) of 256 KiB, and expat 2.5
parses an unfinished token again on every feed."""
MAX_ATTRIBUTES = 8
"""S3 request elements carry no attributes (namespace declarations aside)."""

# A node is `(name, value)`. The value is text (str), a number, a boolean
# (rendered "true"/"false" as S3 does), an iterable of child nodes, or None,
# which omits the element. None entries in a child list are skipped too. The
# name of an element with children may carry attributes after a space (constant
# text, written as it is: `Grantee xsi:type="CanonicalUser"`).
Value: TypeAlias = "str | int | bool | Iterable[Node | None] | None"
Node: TypeAlias = "tuple[str, Value]"


_NEEDS_ESCAPE = re.compile("[&<>\"'\x00-\x08\x0b-\x1f\ud800-\udfff\ufffe\uffff]")
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _character_reference(match: re.Match[str]) -> str:
    return f"&#x{ord(match.group()):x};"


def escape(text: str) -> str:
    """Escape text for element content or a double-quoted attribute value.

    `& < > " '` become entities and `\\r` becomes `&#13;`, so it survives
    parsing (a literal `\\r` is normalised to `\\n` by every XML parser).
    Characters XML 1.0 forbids outright (other C0 controls, lone surrogates,
    U+FFFE, U+FFFF) are written as `&#xN;` references, as S3 does for
    control characters. Such a document is not well-formed XML 1.0 and
    strict parsers reject it, which is why S3 clients list keys holding these
    characters with `EncodingType=url`; the reference keeps the response
    faithful and its bytes encodable instead of dropping or corrupting the
    character, or failing the whole listing.
    """
    if _NEEDS_ESCAPE.search(text) is None:
        return text
    # Chained replace() is several times faster than str.translate here.
    text = (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&apos;")
        .replace("\r", "&#13;")
    )
    return _FORBIDDEN.sub(_character_reference, text)


def _render_children(children: Iterable[Node | None], out: list[str]) -> None:
    # The hot loop of every listing: exact str and int leaves come first.
    append = out.append
    for child in children:
        if child is None:
            continue
        name, value = child
        if type(value) is str:
            append(f"<{name}>{escape(value)}</{name}>")
        elif type(value) is int:
            append(f"<{name}>{value}</{name}>")
        elif value is not None:
            _render_other(name, value, out)


def _render_other(
    name: str, value: str | int | bool | Iterable[Node | None], out: list[str]
) -> None:
    if isinstance(value, bool):
        out.append(f"<{name}>{'true' if value else 'false'}</{name}>")
    elif isinstance(value, str):
        out.append(f"<{name}>{escape(value)}</{name}>")
    elif isinstance(value, int):
        out.append(f"<{name}>{int(value)}</{name}>")
    else:
        out.append(f"<{name}>")
        _render_children(value, out)
        out.append(f"</{name.partition(' ')[0]}>")


def element(name: str, value: Value) -> str:
    """Render one element and its descendants; "" when `value` is None."""
    out: list[str] = []
    _render_children(((name, value),), out)
    return "".join(out)


def document(
    root_name: str, children: Iterable[Node | None], xmlns: str | None = S3_XMLNS
) -> bytes:
    """Render a whole UTF-8 document with its XML declaration.

    The root always appears, even with no children; pass `xmlns=None` for a
    root without a namespace (AWS sends `<Error>` that way).
    """
    opening = f'<{root_name} xmlns="{escape(xmlns)}">' if xmlns else f"<{root_name}>"
    out = [XML_DECLARATION, opening]
    _render_children(children, out)
    out.append(f"</{root_name}>")
    return "".join(out).encode("utf-8")


def error_document(
    code: str,
    message: str,
    *,
    resource: str,
    request_id: str,
    host_id: str,
    extra: dict[str, str] | None = None,
) -> bytes:
    """Render the `<Error>` body S3 answers with when a request fails."""
    children: list[Node] = [("Code", code), ("Message", message)]
    if extra:
        children.extend(extra.items())
    children += [("Resource", resource), ("RequestId", request_id), ("HostId", host_id)]
    return document("Error", children, xmlns=None)


class _Refused(Exception):
    """Raised inside an expat callback to stop the parse of a body: it is over its
    limits or declares a DTD."""


def _refuse_dtd(*_: object) -> None:
    raise _Refused


class _BoundedTreeBuilder:
    """Builds the element tree from expat's callbacks, counting elements as they start.

    Tags lose their namespace ("uri}Key" -> "Key"): S3 bodies are matched by
    local name, with or without the S3 namespace.
    """

    def __init__(self, max_elements: int) -> None:
        self._builder = ET.TreeBuilder()
        self._elements_left = max_elements
        self.events = 0

    def start(self, name: str, attributes: dict[str, str]) -> None:
        self.events += 1
        self._elements_left -= 1
        if self._elements_left < 0 or len(attributes) > MAX_ATTRIBUTES:
            raise _Refused
        self._builder.start(name.rpartition("}")[2], attributes)

    def end(self, name: str) -> None:
        self.events += 1
        self._builder.end(name.rpartition("}")[2])

    def data(self, text: str) -> None:
        self.events += 1
        self._builder.data(text)

    def close(self) -> ET.Element:
        return self._builder.close()


class XmlParser:
    """A request body parsed as it arrives, in bounded work (sans-IO: fed bytes).

    `feed` raises `S3Error("MalformedXML")` as soon as the bytes so far are
    over `max_bytes`, hold more than `max_elements` elements, start a DTD
    (hence any entity), are not UTF-8 or do not parse; `close` returns the
    element tree, tags stripped of their namespace. Expat is fed FEED_CHARS at
    a time, the element count is checked as each element starts, and a token
    that spans more than MAX_SILENT_FEEDS feeds is refused too, so the work is
    bounded by the budget and not by what the body holds. The bytes are
    decoded first and handed to expat as text, which expat then reads as UTF-8
    whatever encoding the document declares.
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_XML_BYTES,
        max_elements: int = DEFAULT_MAX_XML_ELEMENTS,
    ) -> None:
        self._bytes_left = max_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._builder = _BoundedTreeBuilder(max_elements)
        parser = xml.parsers.expat.ParserCreate(namespace_separator="}")
        parser.buffer_text = True
        parser.StartElementHandler = self._builder.start
        parser.EndElementHandler = self._builder.end
        parser.CharacterDataHandler = self._builder.data
        parser.StartDoctypeDeclHandler = _refuse_dtd  # entities are declared in a DTD only
        self._parser = parser
        self._pending = ""
        self._silent_feeds = 0

    def feed(self, data: bytes) -> None:
        self._bytes_left -= len(data)
        if self._bytes_left < 0:
            raise S3Error("MalformedXML")
        self._parse(data, final=False)

    def close(self) -> ET.Element:
        self._parse(b"", final=True)
        return self._builder.close()

    def _parse(self, data: bytes, *, final: bool) -> None:
        try:
            text = self._pending + self._decoder.decode(data, final)
            # Whole FEED_CHARS pieces only (but the last): fed in small pieces,
            # expat would parse an unfinished token again for each of them.
            whole = len(text) if final else len(text) - len(text) % FEED_CHARS
            self._pending = text[whole:]
            for offset in range(0, whole, FEED_CHARS):
                events_before = self._builder.events
                self._parser.Parse(text[offset : offset + FEED_CHARS], False)
                if self._builder.events != events_before:
                    self._silent_feeds = 0
                else:
                    self._silent_feeds += 1
                    if self._silent_feeds > MAX_SILENT_FEEDS:
                        raise _Refused
            if final:
                self._parser.Parse("", True)
        except (_Refused, UnicodeDecodeError, xml.parsers.expat.ExpatError):
            raise S3Error("MalformedXML") from None


def parse_xml(
    body: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_XML_BYTES,
    max_elements: int = DEFAULT_MAX_XML_ELEMENTS,
) -> ET.Element:
    """Parse a whole request body (see `XmlParser` for the limits and errors)."""
    parser = XmlParser(max_bytes=max_bytes, max_elements=max_elements)
    parser.feed(body)
    return parser.close()
