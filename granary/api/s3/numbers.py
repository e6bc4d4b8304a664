"""Decimal numbers in request input (query, headers, form fields), parsed strictly. Sans-IO.

Python's `str.isdigit` accepts superscripts (`"²"`) that `int` then rejects,
`int` itself accepts other scripts' digits, surrounding blanks, `_`
separators and signs, and it raises past 4,300 digits. Request input goes
through here instead: ASCII digits only, and a bounded length, so no value a
client sends can turn into an unexpected exception.
"""

from __future__ import annotations

from granary.api.s3.errors import S3Error

# 19 digits hold any size or count S3 deals with (2**63 - 1 has 19 digits).
MAX_DIGITS = 19
MAX_PART_NUMBER = 10000


def parse_decimal(text: str, *, max_digits: int = MAX_DIGITS) -> int | None:
    """The value of `text` if it is 1 to `max_digits` ASCII digits, else None."""
    if not 0 < len(text) <= max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def integer_argument(
    text: str,
    name: str,
    *,
    minimum: int = 0,
    maximum: int | None = None,
    message: str | None = None,
) -> int:
    """A decimal query or header argument within [minimum, maximum]; InvalidArgument otherwise."""
    value = parse_decimal(text)
    if value is None or value < minimum or (maximum is not None and value > maximum):
        raise S3Error(
            "InvalidArgument",
            message or _range_message(name, minimum, maximum),
            ArgumentName=name,
            ArgumentValue=text,
        )
    return value


def part_number_argument(text: str) -> int:
    """A `partNumber` between 1 and 10,000, as S3 words the error otherwise."""
    return integer_argument(
        text,
        "partNumber",
        minimum=1,
        maximum=MAX_PART_NUMBER,
        message="Part number must be an integer between 1 and 10000, inclusive",
    )


def _range_message(name: str, minimum: int, maximum: int | None) -> str:
    if maximum is None:
        return f"{name} must be an integer of at least {minimum}"
    return f"{name} must be an integer between {minimum} and {maximum}"
