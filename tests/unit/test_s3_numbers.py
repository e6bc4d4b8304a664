"""The strict decimal parser every number in request input goes through."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from granary.api.s3.errors import S3Error
from granary.api.s3.numbers import integer_argument, parse_decimal, part_number_argument


@pytest.mark.parametrize(
    "text",
    [
        "",
        "²",
        "1²",
        "٣",
        "\uff11",  # fullwidth one
        " 5",
        "5 ",
        "+5",
        "-5",
        "1_000",
        "0x10",
        "1e3",
        "9" * 20,
        "9" * 5000,
    ],
)
def test_not_a_plain_decimal(text):
    assert parse_decimal(text) is None


@given(st.integers(0, 10**19 - 1))
def test_plain_decimals(number):
    assert parse_decimal(str(number)) == number
    assert parse_decimal(str(number).zfill(19)) == number


@given(st.text(max_size=30))
def test_anything_else_is_none_never_an_exception(text):
    value = parse_decimal(text)
    assert value is None or (text.isascii() and text.isdigit() and value == int(text))


def test_max_digits():
    assert parse_decimal("1" * 25, max_digits=25) == int("1" * 25)
    assert parse_decimal("1" * 26, max_digits=25) is None


@pytest.mark.parametrize("text", ["0", "10001", "²", "9" * 5000, "", "1.5"])
def test_part_number_out_of_range_or_unreadable(text):
    with pytest.raises(S3Error) as caught:
        part_number_argument(text)
    error = caught.value
    assert (error.code, error.status) == ("InvalidArgument", 400)
    assert error.extra == {"ArgumentName": "partNumber", "ArgumentValue": text}


def test_part_number_in_range():
    assert part_number_argument("1") == 1
    assert part_number_argument("10000") == 10000


def test_integer_argument_bounds_and_message():
    assert integer_argument("7", "max-things") == 7
    with pytest.raises(S3Error) as caught:
        integer_argument("7", "max-things", minimum=8)
    assert caught.value.message == "max-things must be an integer of at least 8"
    with pytest.raises(S3Error) as caught:
        integer_argument("9", "max-things", maximum=8)
    assert caught.value.message == "max-things must be an integer between 0 and 8"
