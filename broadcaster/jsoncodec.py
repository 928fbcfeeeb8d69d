"""JSON encoding shared by the server and the publishers.

orjson when it is installed (the ``fast`` extra), the standard library
otherwise. Both produce compact JSON with non-ASCII characters kept as they
are, which is what Node's ``JSON.stringify`` does, so the bytes a client sees do
not depend on which one is installed.
"""

from __future__ import annotations

import json
import math
from typing import Any

_std_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised when the extra is absent
    _orjson = None


def dumps(obj: Any) -> str:
    if _orjson is not None:
        try:
            return _orjson.dumps(obj).decode("utf-8")
        except TypeError:
            # Integers beyond 64 bits and other values orjson refuses.
            pass
    return _std_dumps(obj)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def loads(data: str | bytes | bytearray | memoryview) -> Any:
    """Parse as JavaScript's ``JSON.parse`` would, then ``JSON.stringify``.

    ``NaN``/``Infinity`` literals are rejected (json accepts them) and a float
    that overflows becomes None (JSON.stringify sends Infinity as null); either
    would otherwise be re-encoded as a bare ``NaN``/``Infinity``, which the
    browser's decoder throws on ("invalid payload" in socket.io-client 2).
    """
    if _orjson is not None:
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            # orjson is stricter (e.g. big integers); let json decide.
            pass
    if not isinstance(data, str):
        data = bytes(data).decode("utf-8")
    return json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)


JSONDecodeError = ValueError
