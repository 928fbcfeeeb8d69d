"""JSON encoding shared by the server and the publishers.

orjson when it is installed (the ``fast`` extra), the standard library
otherwise. Both produce compact JSON with non-ASCII characters kept as they
are, which is what Node's ``JSON.stringify`` does, so the bytes a client sees do
not depend on which one is installed.

``members`` is the hot path's parser: pysimdjson (also in ``fast``) validates a
broadcast message and hands the payload back as compact UTF-8 JSON straight
from its tape, without building the Python dicts and lists that ``loads`` +
``dumps`` would only throw away (2.7 µs instead of 3.6 on the benchmark's
584-byte event, and the frame is then built from bytes with no str round trip).
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

try:
    import simdjson as _simdjson
except ImportError:  # pragma: no cover - exercised when the extra is absent
    _simdjson = None

# Larger documents take the general path: the parser keeps buffers sized to the
# largest document it has seen, for as long as the process lives.
FAST_PARSE_LIMIT = 64 * 1024


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


class _FastParser:
    """One reusable simdjson parser. A parse invalidates the previous document, so
    nothing parsed here outlives the call that parsed it."""

    __slots__ = ("containers", "object_type", "parser")

    def __init__(self) -> None:
        self.parser = _simdjson.Parser()
        self.object_type = _simdjson.Object
        self.containers = (_simdjson.Object, _simdjson.Array)

    def members(self, payload: bytes, names: tuple[str, ...], as_text: str) -> list[Any] | None:
        try:
            doc = self.parser.parse(payload)
        except RuntimeError:
            # A document still referenced (an exception's traceback): start afresh.
            self.parser = _simdjson.Parser()
            return None
        except ValueError:  # invalid JSON, or numbers simdjson cannot hold
            return None
        try:
            if type(doc) is not self.object_type or len(doc) != len(names):
                return None
            found = []
            for name in names:
                value = doc[name]
                if name == as_text:
                    # (No hasattr: ``mini`` is a property, it would serialise twice.)
                    value = value.mini if type(value) in self.containers \
                        else dumps(value).encode("utf-8")
                found.append(value)
            return found
        except KeyError:
            return None
        finally:
            del doc


_fast = _FastParser() if _simdjson is not None else None


def members(payload: bytes | str, names: tuple[str, ...], as_text: str) -> list[Any] | None:
    """The values of ``names`` in a JSON object that has exactly those members (so no
    duplicates among them), with member ``as_text`` left as compact JSON text (UTF-8
    bytes: the server puts it into frames as it is, with no decode and re-encode).

    None whenever the fast parser is not installed or cannot be sure (not bytes,
    too large, invalid, another shape, numbers beyond 64 bits, lone surrogates):
    the caller then takes the general ``loads`` path, which decides and reports.
    The text equals ``dumps(loads(...))`` of the member up to number spelling
    (``1e+25`` as JavaScript writes it, against orjson's ``1e25``).
    """
    if _fast is None or type(payload) is not bytes or len(payload) > FAST_PARSE_LIMIT:
        return None
    return _fast.members(payload, names, as_text)


JSONDecodeError = ValueError
