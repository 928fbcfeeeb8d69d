"""A small `.env` reader, enough for a Laravel project's `.env`.

The reference loads `.env` with the `dotenv` npm package before applying its
`LARAVEL_ECHO_SERVER_*` overrides, and real environment variables always win. Laravel `.env`
files commonly point one variable at another (`LARAVEL_ECHO_SERVER_REDIS_HOST=${REDIS_HOST}`),
so `${VAR}` is expanded here, as Laravel's own loader does. We keep this in-house rather than
adding a dependency for fifty lines.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)

_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.\-]*)\s*=\s*(.*)$")
_REFERENCE = re.compile(r"\$\{([^}]*)\}")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


def expand(value: str, lookup: Mapping[str, str] | Callable[[str], str]) -> str:
    """Replace each `${NAME}` by its value; unknown names become "" as in a shell."""
    find = lookup if callable(lookup) else (lambda name: lookup.get(name, ""))
    return _REFERENCE.sub(lambda match: find(match.group(1).strip()), value)


def _unescape_double(body: str) -> str:
    """Double quotes allow the usual escapes, so keys and multi-line values survive."""
    out: list[str] = []
    chars = iter(body)
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
        else:
            out.append(char)
    return "".join(out)


def _closing_quote(text: str, quote: str) -> int:
    """Index of the closing quote in `text` (after the opening one), or -1."""
    index = 1
    while index < len(text):
        if text[index] == "\\" and quote == '"':
            index += 2
            continue
        if text[index] == quote:
            return index
        index += 1
    return -1


def _strip_inline_comment(raw: str) -> str:
    """An unquoted value ends at ` #`, so `KEY=value # note` reads as `value`."""
    match = re.search(r"\s#", raw)
    return (raw[: match.start()] if match else raw).strip()


def _read_value(raw: str, lines: list[str], index: int) -> tuple[str, bool, int]:
    """The value starting at `raw`, whether `${}` applies, and the next line's index."""
    if raw[:1] not in ('"', "'"):
        return _strip_inline_comment(raw), True, index
    quote = raw[0]
    # A quoted value may span lines until its closing quote.
    while _closing_quote(raw, quote) < 0 and index < len(lines):
        raw += "\n" + lines[index]
        index += 1
    end = _closing_quote(raw, quote)
    body = raw[1:end] if end > 0 else raw[1:]
    return (body, False, index) if quote == "'" else (_unescape_double(body), True, index)


def _assignments(text: str) -> dict[str, tuple[str, bool]]:
    """Each `KEY=value` as (unexpanded value, expandable); the last assignment wins."""
    found: dict[str, tuple[str, bool]] = {}
    lines = text.replace("\r\n", "\n").split("\n")
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ASSIGNMENT.match(line)
        if match is None:
            logger.debug(".env: ignoring line %d (not KEY=VALUE)", index)
            continue
        value, expandable, index = _read_value(match.group(2).strip(), lines, index)
        found[match.group(1)] = (value, expandable)
    return found


class _Resolver:
    """Looks names up in the real environment, then in the file, expanding on demand.

    The reference resolves `${VAR}` after the whole file is loaded, so a reference to a
    variable defined further down works; a cycle resolves to "".
    """

    def __init__(self, real: Mapping[str, str], file: dict[str, tuple[str, bool]]) -> None:
        self._real = real
        self._file = file
        self._busy: set[str] = set()

    def __call__(self, name: str) -> str:
        if name in self._real:
            return self._real[name]
        if name not in self._file or name in self._busy:
            return ""
        value, expandable = self._file[name]
        self._busy.add(name)
        try:
            return expand(value, self) if expandable else value
        finally:
            self._busy.discard(name)


def parse(text: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Parse `.env` text into the variables it would add to `environ`.

    Variables already in `environ` are left out: real environment variables win, also inside
    `${VAR}`. Single-quoted values are literal.
    """
    real = dict(environ if environ is not None else os.environ)
    file = _assignments(text)
    resolver = _Resolver(real, file)
    return {key: resolver(key) for key in file if key not in real}


def load(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Read `path` if it exists; a missing `.env` is normal, an unreadable one only logged."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            text = handle.read()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        logger.warning("could not read %s: %s", path, error)
        return {}
    return parse(text, environ)
