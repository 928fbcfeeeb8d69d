"""JSON exactly as PHP's ``json_encode($value)`` writes it (no flags).

Laravel's RedisBroadcaster calls ``json_encode`` without options, so what a Laravel app puts on
Redis has escaped slashes (``\\/``), ``\\uXXXX`` escapes (lowercase hex, surrogate pairs) for
every non-ASCII character, and floats in PHP's own notation: ``30.0`` is written ``30``,
``1e17`` is ``1.0e+17``, ``0.00001`` is ``1.0e-5``. A Python service that publishes "the same
event" must produce the same bytes, or a consumer comparing, signing or de-duplicating payloads
sees two different messages; this module is that encoder (checked byte for byte against PHP 8.2
in tests/test_publisher.py).

Only the publishers use it: the server re-encodes what it receives the way Node's
``JSON.stringify`` does (see echo_common.jsoncodec), as laravel-echo-server did.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from json.encoder import encode_basestring_ascii
from typing import Any

# PHP (serialize_precision = -1) switches to exponent notation outside this decimal-point range.
_MAX_FIXED_DECPT = 17
_MIN_FIXED_DECPT = -3


def php_float(value: float) -> str:
    """``json_encode`` of a PHP float: the shortest round-trip digits (as Python's repr),
    laid out the way PHP's ``php_gcvt`` does."""
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not JSON (json_encode fails on INF and NAN)")
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0"
    digits_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()[1:]
    digits = "".join(map(str, digits_tuple))
    decpt = len(digits) + int(exponent)  # value = 0.<digits> * 10**decpt
    if decpt < _MIN_FIXED_DECPT or decpt > _MAX_FIXED_DECPT:
        power = decpt - 1
        mantissa = digits[0] + "." + (digits[1:] or "0")
        return f"{sign}{mantissa}e{'+' if power >= 0 else '-'}{abs(power)}"
    if decpt <= 0:
        return f"{sign}0.{'0' * -decpt}{digits}"
    if len(digits) <= decpt:
        return sign + digits + "0" * (decpt - len(digits))
    return f"{sign}{digits[:decpt]}.{digits[decpt:]}"


def _string(value: str) -> str:
    # Python's ASCII escaping matches PHP's (\uXXXX lowercase, \b \f \n \r \t, surrogate
    # pairs) but for DEL, which PHP leaves as it is; PHP also escapes "/", which can only occur
    # inside strings.
    if "\x7f" in value:
        parts = (encode_basestring_ascii(part)[1:-1] for part in value.split("\x7f"))
        encoded = '"' + "\x7f".join(parts) + '"'
    else:
        encoded = encode_basestring_ascii(value)
    return encoded.replace("/", "\\/")


def _encode(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(_string(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(php_float(value))
    elif isinstance(value, Mapping):
        out.append("{")
        first = True
        for key, item in value.items():
            if not first:
                out.append(",")
            first = False
            out.append(_string(key if isinstance(key, str) else _key(key)))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _key(key: Any) -> str:
    if isinstance(key, bool) or key is None:
        return {True: "true", False: "false", None: "null"}[key]
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float):
        return php_float(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def php_json_encode(value: Any) -> str:
    """``json_encode($value)``; a Python dict is a PHP associative array (``{}`` even when
    empty, where PHP would write ``[]`` for an empty array), a list or tuple a PHP list."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out)


__all__ = ["php_float", "php_json_encode"]
