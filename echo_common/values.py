"""Reading one value of ``laravel-echo-server.json`` the way the reference's JavaScript would,
and the checks every section's settings share (milliseconds, positive counts). One module, so
that each room's settings (``transport.settings``, ``core.settings``, …) reads its keys with
the same rules and the same error messages."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def js_string(value: Any) -> str:
    """`String(value)` in JavaScript: the reference compares these strings, not Python's."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ",".join("" if item is None else js_string(item) for item in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


def js_truthy(value: Any) -> bool:
    """JavaScript truthiness: `{}`, `[]` and `"false"` are true, `0`, `""` and null are not."""
    if value is None or value is False or value == "":
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value != 0 and not math.isnan(value)
    return True


def optional_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def section(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A top-level object of the file, or an empty one when it is absent or not an object."""
    value = raw.get(key)
    return value if isinstance(value, dict) else {}


def milliseconds(value: Any, name: str) -> float:
    """A non-negative number of milliseconds (a number or a numeric string), in seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{name} must be a number of milliseconds")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of milliseconds, not {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a non-negative number of milliseconds")
    return number / 1000.0


def positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, not {value!r}") from None
    if isinstance(value, bool) or number <= 0:
        raise ValueError(f"{name} must be a positive integer")
    return number


def count(section: Mapping[str, Any], key: str, default: int, name: str, *,
          zero_ok: bool = False) -> int:
    """A bound of the ``limits`` object: a JSON integer, at least 1 (or 0, meaning off, where
    ``zero_ok``); ``name`` is how the message names the key."""
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero_ok else 1):
        least = "0 (off) or more" if zero_ok else "a positive integer"
        raise ValueError(f"{name} must be {least}, not {value!r}")
    return value


def positive_seconds(section: Mapping[str, Any], key: str, default: float, name: str) -> float:
    """A timeout of the ``limits`` object: a positive JSON number of milliseconds, in seconds
    (``default`` is in seconds)."""
    value = section.get(key, default * 1000)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number of milliseconds")
    return float(value) / 1000.0


def positive_number(section: Mapping[str, Any], key: str, default: float, name: str, *,
                    integer: bool = False, scale: float = 1.0,
                    error: type[ValueError] = ValueError) -> float:
    """A positive, finite JSON number (an integer where ``integer``), times ``scale``
    (``default`` is in the file's unit); ``name`` is how the message names the key, ``error``
    the section's own kind of ValueError."""
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value > 0) or (integer and not isinstance(value, int)):
        raise error(f"{name} must be a positive {'integer' if integer else 'number'}, "
                    f"not {value!r}")
    return value * scale
