import tracemalloc
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from granary.api.s3.errors import S3Error
from granary.api.s3.xml import (
    S3_XMLNS,
    XmlParser,
    document,
    element,
    error_document,
    escape,
    parse_xml,
)

# Characters XML 1.0 allows, \r included (it must survive as &#13;).
xml_chars = st.characters(
    blacklist_categories=("Cs",),
    blacklist_characters=[chr(c) for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)]
    + ["\ufffe", "\uffff"],
)


def test_escape_markup_characters():
    assert escape("""a&b<c>d"e'f""") == "a&amp;b&lt;c&gt;d&quot;e&apos;f"


def test_escape_leaves_plain_text_alone():
    text = "photos/2024/été\tnew\nline ✓"
    assert escape(text) is text


def test_escape_carriage_return_survives_parsing():
    out = escape("a\rb\r\nc")
    assert out == "a&#13;b&#13;\nc"
    assert ET.fromstring(f"<Key>{out}</Key>").text == "a\rb\r\nc"


def test_escape_forbidden_characters_as_references():
    assert escape("a\x01b\x1fc") == "a&#x1;b&#x1f;c"
    assert escape("\ufffe\uffff") == "&#xfffe;&#xffff;"
    # A lone surrogate becomes a reference, so the output can be UTF-8 encoded.
    assert escape("x\udc80") == "x&#xdc80;"
    escape("x\udc80").encode("utf-8")


def test_escape_ampersand_is_not_escaped_twice():
    assert escape("&amp;\x02") == "&amp;amp;&#x2;"


@given(st.text(xml_chars))
def test_escape_round_trips_through_etree(text):
    parsed = ET.fromstring(f"<Key>{escape(text)}</Key>").text or ""
    assert parsed == text


def test_element_renders_nested_nodes_and_skips_none():
    xml = element(
        "Contents",
        [
            ("Key", "a&b"),
            None,
            ("VersionId", None),
            ("Size", 3),
            ("IsLatest", True),
            ("Owner", [("ID", "x")]),
            ("Prefix", ""),
        ],
    )
    assert xml == (
        "<Contents><Key>a&amp;b</Key><Size>3</Size><IsLatest>true</IsLatest>"
        "<Owner><ID>x</ID></Owner><Prefix></Prefix></Contents>"
    )


def test_element_with_none_value_is_omitted():
    assert element("NextMarker", None) == ""
    assert element("IsTruncated", False) == "<IsTruncated>false</IsTruncated>"


def test_element_accepts_generators():
    xml = element("List", (("Item", str(i)) for i in range(3)))
    assert xml == "<List><Item>0</Item><Item>1</Item><Item>2</Item></List>"


def test_document_has_declaration_and_namespace():
    body = document("ListAllMyBucketsResult", [("Buckets", [])])
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(body)
    assert root.tag == f"{{{S3_XMLNS}}}ListAllMyBucketsResult"
    assert root[0].tag == f"{{{S3_XMLNS}}}Buckets"


def test_document_without_namespace():
    root = ET.fromstring(document("Tagging", [("TagSet", [])], xmlns=None))
    assert root.tag == "Tagging"


def test_document_of_a_thousand_keys_parses_back():
    entries = [("Contents", [("Key", f"k{i}\r<&>"), ("Size", i)]) for i in range(1000)]
    root = ET.fromstring(document("ListBucketResult", [("IsTruncated", False), *entries]))
    keys = [node.text for node in root.iter(f"{{{S3_XMLNS}}}Key")]
    assert keys == [f"k{i}\r<&>" for i in range(1000)]


def test_error_document_layout():
    body = error_document(
        "NoSuchKey",
        "The specified key does not exist.",
        resource="/bucket/a&b",
        request_id="req1",
        host_id="host1",
        extra={"Key": "a&b", "BucketName": "bucket"},
    )
    root = ET.fromstring(body)
    assert root.tag == "Error"
    assert root.attrib == {}
    assert [(child.tag, child.text) for child in root] == [
        ("Code", "NoSuchKey"),
        ("Message", "The specified key does not exist."),
        ("Key", "a&b"),
        ("BucketName", "bucket"),
        ("Resource", "/bucket/a&b"),
        ("RequestId", "req1"),
        ("HostId", "host1"),
    ]


def test_error_document_without_extra():
    root = ET.fromstring(
        error_document("AccessDenied", "Access Denied", resource="/", request_id="r", host_id="h")
    )
    assert [child.tag for child in root] == ["Code", "Message", "Resource", "RequestId", "HostId"]


def test_parse_xml_strips_namespaces():
    body = (
        b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<Object><Key>a</Key></Object></Delete>"
    )
    root = parse_xml(body)
    assert root.tag == "Delete"
    assert root.find("Object/Key").text == "a"


def test_parse_xml_without_namespace_and_with_bom():
    root = parse_xml(b'\xef\xbb\xbf<?xml version="1.0" encoding="UTF-8"?><A><B>x</B></A>')
    assert root.find("B").text == "x"


def test_parse_xml_keeps_escaped_carriage_return():
    assert parse_xml(b"<Key>a&#13;b</Key>").text == "a\rb"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<a>",
        b"not xml",
        b"<a></b>",
        b"\xff\xfe<\x00a\x00/\x00>\x00",
        b"<a>\xc3</a>",
        b"<a>&#x1;</a>",
        b"<a>&undefined;</a>",
    ],
)
def test_parse_xml_rejects_malformed(body):
    with pytest.raises(S3Error) as raised:
        parse_xml(body)
    assert raised.value.code == "MalformedXML"


def test_parse_xml_rejects_doctype_and_entities():
    billion_laughs = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        b"<lolz>&lol2;</lolz>"
    )
    xxe = b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/hostname">]><a>&x;</a>'
    for body in (billion_laughs, xxe, b"<!DOCTYPE a><a/>"):
        with pytest.raises(S3Error) as raised:
            parse_xml(body)
        assert raised.value.code == "MalformedXML"


def test_parse_xml_ignores_declared_encoding():
    # The DTD check works on UTF-8 text; a declared encoding must not make
    # the parser read the bytes differently.
    body = '<?xml version="1.0" encoding="cp500"?><a>é</a>'.encode()
    assert parse_xml(body).text == "é"


def test_parse_xml_size_cap():
    body = b"<a>" + b"x" * 100 + b"</a>"
    assert parse_xml(body, max_bytes=len(body)).text == "x" * 100
    with pytest.raises(S3Error) as raised:
        parse_xml(body, max_bytes=len(body) - 1)
    assert raised.value.code == "MalformedXML"


@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: f"<a>{t}</a>".encode()))
def test_parse_xml_fails_only_with_malformed_xml(body):
    try:
        parse_xml(body)
    except S3Error as error:
        assert error.code == "MalformedXML"


def _malformed(body: bytes, **limits: int) -> bool:
    with pytest.raises(S3Error) as raised:
        parse_xml(body, **limits)
    return raised.value.code == "MalformedXML"


def test_parse_xml_element_budget():
    body = b"<Delete>" + b"<Object/>" * 9 + b"</Delete>"
    assert len(parse_xml(body, max_elements=10)) == 9
    assert _malformed(body, max_elements=9)


def test_parse_xml_stops_a_bomb_at_its_budget():
    """An 8 MiB body of 2 M elements is refused without building them: the
    parse holds far less memory than the body's full tree would take."""
    bomb = b"<Delete>" + b"<a/>" * (2 << 20) + b"</Delete>"
    tracemalloc.start()
    try:
        assert _malformed(bomb, max_bytes=len(bomb), max_elements=10_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The decoded text (a copy of the body) plus a bounded parse; the whole
    # tree of 2 M elements would take well over 100 MB.
    assert peak < 3 * len(bomb)


def test_parse_xml_stops_a_deep_nesting_bomb():
    assert _malformed(b"<a>" * 1_000_000, max_bytes=1 << 22, max_elements=10_000)


@pytest.mark.parametrize(
    "body",
    [
        # One start tag of 1 MiB: expat re-parses an unfinished token on each feed.
        b"<Delete " + b" ".join(b'a%d="x"' % i for i in range(100_000)) + b"/>",
        b"<Delete><!--" + b"x" * (1 << 20) + b"--></Delete>",
        b"<Delete>" + b"<?p?>" * 200_000 + b"</Delete>",
    ],
    ids=["huge-start-tag", "huge-comment", "processing-instructions"],
)
def test_parse_xml_refuses_long_tokens_without_elements(body):
    assert _malformed(body, max_bytes=len(body))


def test_parse_xml_refuses_attributes_beyond_a_few():
    attributes = " ".join(f'a{i}="x"' for i in range(9))
    assert _malformed(f"<Delete {attributes}/>".encode())
    assert parse_xml(b'<Delete a="1" xmlns="u" xmlns:x="v" x:b="2"/>').attrib == {
        "a": "1",
        "v}b": "2",
    }


def test_xml_parser_refuses_a_bomb_from_its_first_pieces():
    """Fed as the body arrives, a bomb is refused long before its end."""
    bomb = b"<Delete>" + b"<a/>" * (2 << 20) + b"</Delete>"
    parser = XmlParser(max_bytes=len(bomb), max_elements=10_000)
    fed = 0
    with pytest.raises(S3Error) as raised:
        for offset in range(0, len(bomb), 4096):
            fed += 4096
            parser.feed(bomb[offset : offset + 4096])
    assert raised.value.code == "MalformedXML"
    assert fed <= 256 * 1024


def test_xml_parser_fed_in_small_pieces():
    body = (
        "<Delete>" + "".join(f"<Object><Key>é{i}</Key></Object>" for i in range(500)) + "</Delete>"
    )
    data = body.encode()
    parser = XmlParser(max_elements=1_001)
    for offset in range(0, len(data), 7):  # splits multi-byte characters too
        parser.feed(data[offset : offset + 7])
    root = parser.close()
    assert [node.findtext("Key") for node in root][-1] == "é499"
