"""Human byte sizes such as ``1M``, ``10MiB`` or ``2G``."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "ki": 1024,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ti": 1024**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | str) -> int:
    """Parse a byte size; plain integers are bytes.

    Single-letter units follow Garage's convention for ``block_size``: ``1M``
    means one MiB, so an operator's config means the same in both systems.
    """
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"negative size: {value}")
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"not a size: {value!r}")
    number, unit = match.groups()
    unit = unit.lower()
    if len(unit) == 1 and unit != "b":
        unit += "i"
    if unit not in _UNITS:
        raise ValueError(f"unknown size unit in {value!r}")
    return int(float(number) * _UNITS[unit])
