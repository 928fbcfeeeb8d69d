"""JSON encoding shared by the server, ``channel_auth`` and the publishers: in the neutral
package, since none of them owns it.

orjson when it is installed (a dependency wherever it has wheels), the standard
library otherwise. Both produce compact JSON with non-ASCII characters kept as they
are, which is what Node's ``JSON.stringify`` does, so the bytes a client sees do
not depend on which one is installed.

``members`` is the hot path's parser: pysimdjson (installed the same way) validates a
broadcast message and hands the payload back as compact UTF-8 JSON straight
from its tape, without building the Python dicts and lists that ``loads`` +
``dumps`` would only throw away (2.7 µs instead of 3.6 on the benchmark's
584-byte event, and the frame is then built from bytes with no str round trip).

``loads`` refuses JSON nested deeper than ``MAX_DEPTH`` with the ValueError of any invalid
JSON, before a parser sees it (``members`` keeps simdjson's own bound, see there). Without the
bound, a document too deep for the standard library (whose parser and encoder recurse once per
level, within Python's recursion limit of 1,000 frames) raised RecursionError out of a
source's decoding, which the source runner took for a lost connection: one such message on
Redis cost every event read with it, and a reconnect.
"""

from __future__ import annotations

import json
import math
import re
from types import ModuleType
from typing import Any

_std_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

# None when absent (and in the tests that take the standard library's path).
_orjson: ModuleType | None
_simdjson: ModuleType | None
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

# PHP's default json_encode/json_decode depth, so nothing Laravel publishes is refused; and
# half of what orjson and simdjson take (1,024), so the standard library, which every value
# ``loads`` returns may meet again in ``dumps`` (orjson encodes only 254 levels), keeps some
# 500 frames of Python's recursion limit for its callers.
MAX_DEPTH = 512
# Anything shorter cannot be deeper: each level is a bracket opened and one closed.
_SHORTEST_TOO_DEEP = 2 * (MAX_DEPTH + 1)
_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{}')


def implementation() -> str:
    """Which parsers this process uses, for the start-up log: the fast paths are compiled
    dependencies that a platform may lack, and a slower install should be seen, not guessed."""
    used = "orjson" if _orjson is not None else "json (standard library)"
    return used + (", pysimdjson for broadcasts" if _simdjson is not None else "")


def dumps(obj: Any) -> str:
    if _orjson is not None:
        try:
            return _orjson.dumps(obj).decode("utf-8")
        except TypeError:
            # Integers beyond 64 bits and other values orjson refuses.
            pass
    return _std_dumps(obj)


def dumps_bytes(obj: Any) -> bytes:
    """``dumps`` as UTF-8, without the round trip through ``str`` where orjson is there
    (frames are bytes)."""
    if _orjson is not None:
        try:
            return _orjson.dumps(obj)
        except TypeError:
            pass
    return _std_dumps(obj).encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _too_deep(data: str | bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` has more than MAX_DEPTH objects and arrays open at once, brackets
    inside strings aside. Callers skip documents shorter than ``_SHORTEST_TOO_DEEP``.

    Every longer document ``loads`` is given passes here, so the common answer costs two
    C-level counts and no allocation: a document with no more than MAX_DEPTH opening
    brackets cannot be too deep. Only one with more (a large payload, or a poison one) is
    scanned, in time linear in its size. The scan is exact for valid JSON; on invalid JSON
    it may count brackets past the first error, never fewer than a parser opens before it.
    """
    if isinstance(data, str):
        if data.count("[") + data.count("{") <= MAX_DEPTH:
            return False
        data = data.encode("utf-8", "surrogatepass")
    else:
        if not isinstance(data, bytes):
            data = bytes(data)
        if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
            return False
    if b"\\" in data:
        # Escaped backslashes, then escaped quotes: neither opens or closes a string.
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Quotes and brackets only, less the strings that hold no bracket (most of them): what is
    # left for the loop is about one step per object or array.
    skeleton = data.translate(_AS_BRACKETS, _NOT_STRUCTURE).replace(b'""', b"")
    depth = 0
    in_string = False
    for byte in skeleton:
        if byte == 0x22:  # '"'
            in_string = not in_string
        elif in_string:
            continue
        elif byte == 0x5B:  # "["
            depth += 1
            if depth > MAX_DEPTH:
                return True
        else:
            depth -= 1
    return False


def loads(data: str | bytes | bytearray | memoryview) -> Any:
    """Parse as JavaScript's ``JSON.parse`` would, then ``JSON.stringify``.

    ``NaN``/``Infinity`` literals are rejected (json accepts them) and a float
    that overflows becomes None (JSON.stringify sends Infinity as null); either
    would otherwise be re-encoded as a bare ``NaN``/``Infinity``, which the
    browser's decoder throws on ("invalid payload" in socket.io-client 2).
    Nesting beyond MAX_DEPTH is invalid JSON here (see the module's docstring), and so
    is a lone surrogate (``"\\ud800"``): valid JSON text, but no UTF-8 string, so it would
    fail later, wherever the value is encoded (a Redis key, a frame, a log line).
    """
    if len(data) >= _SHORTEST_TOO_DEEP and _too_deep(data):
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
    if _orjson is not None:
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            # orjson is stricter (e.g. big integers); let json decide.
            pass
    if not isinstance(data, str):
        data = bytes(data).decode("utf-8")
    value = json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)
    if _SURROGATE_ESCAPE.search(data) is not None:
        try:
            _std_dumps(value).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("lone surrogate in a JSON string") from None
    return value


# A \uD800-\uDFFF escape: only then can json.loads return a string UTF-8 cannot hold (a
# well-formed pair becomes one character).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _FastParser:
    """One reusable simdjson parser. A parse invalidates the previous document, so
    nothing parsed here outlives the call that parsed it."""

    __slots__ = ("containers", "new_parser", "object_type", "parser")

    def __init__(self, simdjson: ModuleType) -> None:
        self.new_parser = simdjson.Parser
        self.parser = simdjson.Parser()
        self.object_type = simdjson.Object
        self.containers = (simdjson.Object, simdjson.Array)

    def members(self, payload: bytes, names: tuple[str, ...], as_text: str) -> list[Any] | None:
        try:
            doc = self.parser.parse(payload)
        except RuntimeError:
            # A document still referenced (an exception's traceback), or one nested
            # beyond simdjson's 1,024 levels (DEPTH_ERROR): start afresh, it is rare.
            self.parser = self.new_parser()
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

    def valid(self, payload: bytes) -> bool | None:
        """True when ``payload`` is JSON simdjson takes; None when it cannot say (it refused:
        invalid, or valid but beyond it, as integers over 64 bits are)."""
        try:
            doc = self.parser.parse(payload)
        except RuntimeError:  # as in ``members``: start afresh
            self.parser = self.new_parser()
            return None
        except ValueError:
            return None
        del doc
        return True


_fast = _FastParser(_simdjson) if _simdjson is not None else None


def members(payload: bytes | str, names: tuple[str, ...], as_text: str) -> list[Any] | None:
    """The values of ``names`` in a JSON object that has exactly those members (so no
    duplicates among them), with member ``as_text`` left as compact JSON text (UTF-8
    bytes: the server puts it into frames as it is, with no decode and re-encode).

    None whenever the fast parser is not installed or cannot be sure (not bytes,
    too large, invalid, another shape, numbers beyond 64 bits, lone surrogates):
    the caller then takes the general ``loads`` path, which decides and reports.
    The text equals ``dumps(loads(...))`` of the member up to number spelling
    (``1e+25`` as JavaScript writes it, against orjson's ``1e25``).

    One difference, on purpose: nesting is bounded by simdjson's own 1,024 levels here,
    not by MAX_DEPTH. Nothing here builds Python values, so depth costs nothing, and
    checking MAX_DEPTH would cost every event above 1 KB two counts of its bytes (a third
    of simdjson's parse); only documents no Laravel app can publish are between the two.
    """
    if _fast is None or type(payload) is not bytes or len(payload) > FAST_PARSE_LIMIT:
        return None
    return _fast.members(payload, names, as_text)


JSONDecodeError = ValueError


def is_json(text: str) -> bool:
    """Whether ``loads(text)`` succeeds, without building the value (a Pusher event's
    ``data``, which goes out as the text it is). simdjson takes a subset of what ``loads``
    does (it refuses NaN, lone surrogates, overflowing floats, integers beyond 64 bits): what
    it refuses, and anything too long or too deep, ``loads`` decides. A third of the cost on
    the benchmark's 523-character event (0.5 µs instead of 1.4)."""
    if _fast is not None and len(text) <= FAST_PARSE_LIMIT // 4 and (
            len(text) < _SHORTEST_TOO_DEEP or not _too_deep(text)):
        try:
            if _fast.valid(text.encode("utf-8")):
                return True
        except UnicodeEncodeError:
            pass
    try:
        loads(text)
    except ValueError:
        return False
    return True


def loads_unbounded(data: bytes) -> Any:
    """``loads`` without ``MAX_DEPTH``, for a caller that only takes strings out of the
    value and never encodes it again (a Pusher API request's body): the bound protects a
    re-encoding, and counting the brackets of a 6.6 KB ``batch_events`` costs more than
    parsing it. orjson keeps its own bound (1,024 levels); whatever it refuses, ``loads``
    decides."""
    if _orjson is not None:
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            pass
    return loads(data)
