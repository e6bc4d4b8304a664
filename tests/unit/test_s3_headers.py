"""response-* overrides of a GET's headers: applied, or refused when no header can carry them."""

from __future__ import annotations

import pytest

from granary.api.s3.errors import S3Error
from granary.api.s3.headers import RESPONSE_OVERRIDES, object_headers
from granary.model.object import ObjectMeta

META = ObjectMeta(size=3, etag="abc", headers=[("content-type", "text/plain")])


def test_overrides_replace_the_stored_headers():
    headers = object_headers(META, 0, {"response-content-type": "image/png; q=1 é"})
    assert ("content-type", "image/png; q=1 é") in headers
    assert ("content-type", "text/plain") not in headers


@pytest.mark.parametrize("parameter", sorted(RESPONSE_OVERRIDES))
@pytest.mark.parametrize(
    "value", ["a\r\nSet-Cookie: x=1", "a\nb", "a\rb", "a\x00b", "a\x85b", "日本", "a\x7fb"]
)
def test_values_no_header_can_carry_are_invalid_argument(parameter, value):
    with pytest.raises(S3Error) as caught:
        object_headers(META, 0, {parameter: value})
    error = caught.value
    assert (error.code, error.status) == ("InvalidArgument", 400)
    assert error.extra["ArgumentName"] == parameter
    assert error.extra["ArgumentValue"].isprintable()
