"""Request routing: the operation a request names, and the paths S3 refuses."""

from __future__ import annotations

import pytest

from granary.api.s3.errors import S3Error
from granary.api.s3.router import decode_path, route


def test_get_torrent_of_an_object_is_get_object_torrent():
    assert route("GET", "b", "k", {"torrent": ""}).operation == "GetObjectTorrent"


@pytest.mark.parametrize(
    ("method", "key"), [("PUT", "k"), ("DELETE", "k"), ("GET", None), ("PUT", None)]
)
def test_torrent_anywhere_else_is_not_implemented(method, key):
    with pytest.raises(S3Error) as caught:
        route(method, "b", key, {"torrent": ""})
    assert (caught.value.code, caught.value.status) == ("NotImplemented", 501)


@pytest.mark.parametrize("raw", ["/b/%C2%AE%C2%8A-", "/b/%C2%80", "/b/a%C2%9Fb"])
def test_c1_control_characters_are_invalid_uri(raw):
    with pytest.raises(S3Error) as caught:
        decode_path(raw)
    assert (caught.value.code, caught.value.message) == (
        "InvalidURI",
        "Couldn't parse the specified URI.",
    )


@pytest.mark.parametrize(
    ("raw", "key"),
    [("/b/%C2%AE-", "\u00ae-"), ("/b/%0A", "\n"), ("/b/%7F", "\x7f"), ("/b/%C2%A0", "\u00a0")],
)
def test_other_characters_are_kept(raw, key):
    assert decode_path(raw) == "/b/" + key
