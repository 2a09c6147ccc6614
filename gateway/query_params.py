"""Integer query parameters and headers, checked with errors that name them (422, not 400)."""

from __future__ import annotations

import re

from gateway.domain_errors import InvalidField

_INTEGER = re.compile(r"-?\d{1,19}")


def parse_int(field: str, text: str | None, *, default: int, low: int, high: int) -> int:
    """``text`` as an integer in ``low..high`` (``default`` when absent); InvalidField otherwise."""
    if text is None:
        return default
    if not _INTEGER.fullmatch(text.strip()):
        raise InvalidField(field, f"{field} must be an integer between {low} and {high}")
    value = int(text)
    if not low <= value <= high:
        raise InvalidField(field, f"{field} must be between {low} and {high}, not {value}")
    return value
