"""How log records are written: ``text`` for people, ``json`` for log pipelines.

``"log": {"format": "json"}`` (or ``ECHO_LOG_FORMAT=json``) makes every record one JSON
object on one line, so a collector (Loki, Elasticsearch, CloudWatch, ...) can index its
fields without a parsing rule: ``time``, ``level``, ``logger``, ``message``, and whatever
context the code attached to the record with ``extra=`` (``source``, ``kind``, a socket id, a
channel, a worker), plus ``exception`` when there is a traceback.

A context field named like a credential (token, key, secret, cookie, authorization,
password) is written as ``"[redacted]"``, however deep in a mapping, and so is the value of
``name=value`` with such a name, or of ``Bearer ...``, in a message: logs are read by more
people, and kept longer, than the secrets they would leak. (The text format is for a person
at a terminal and keeps them: the development API key printed when no client is configured
is only useful there.)

In the text format every character of a message that is not printable (a newline, a carriage
return, a terminal escape, a Unicode line separator) is written escaped, as Python writes it in
a string literal: a value from a client (a channel name, a header) cannot start a line of its
own that would pass for a record, nor drive the terminal. A traceback keeps its lines.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
TEXT_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
REDACTED = "[redacted]"

_SECRET_NAME = re.compile(r"token|key|secret|cookie|authorization|password|passphrase",
                          re.IGNORECASE)
_SECRET_IN_TEXT = re.compile(
    r"\b(?P<name>[\w.-]*(?:token|key|secret|cookie|password|passphrase)[\w.-]*)=[^\s&'\"]+"
    r"|\b(?P<scheme>Bearer)\s+[^\s'\"]+", re.IGNORECASE)
# What every record has: anything else on it was given as ``extra=`` (context).
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime",
                                                                   "taskName"}
_HANDLER_NAME = "echo-server"


def _redacted_text(text: str) -> str:
    return _SECRET_IN_TEXT.sub(
        lambda m: f"{m['name']}={REDACTED}" if m["name"] else f"{m['scheme']} {REDACTED}", text)


def _redacted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(name): REDACTED if _SECRET_NAME.search(str(name)) else _redacted(item)
                for name, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted(item) for item in value]
    return _redacted_text(value) if isinstance(value, str) else value


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _redacted_text(record.getMessage()),
        }
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and name not in entry:
                entry[name] = REDACTED if _SECRET_NAME.search(name) else _redacted(value)
        if record.exc_info:
            entry["exception"] = _redacted_text(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: a context value of any type is written rather than losing the record.
        return json.dumps(entry, ensure_ascii=False, default=str)


def printable(value: object) -> str:
    """``value`` as text with each character that is not printable escaped (``\\n``,
    ``\\x1b``, ``\\u2028``): what the client sent stays on one line and is still legible."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class TextFormatter(logging.Formatter):
    """The text format, its message escaped by ``printable``: done here, once, so that no
    call site can forget it."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT, datefmt=TEXT_DATE_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    return TextFormatter()


def configure(log_format: str = "text", level: int = logging.INFO) -> None:
    """Records to stderr in ``log_format``, from ``level`` up.

    The CLI calls this first with ``text`` (before the configuration is read), then with the
    configured format: the second call changes the format of the same handler, so no record
    is written twice. As ``logging.basicConfig`` does, a process whose root logger already
    has handlers (a program embedding the server, a test runner) keeps its own.
    """
    root = logging.getLogger()
    ours = next((h for h in root.handlers if h.get_name() == _HANDLER_NAME), None)
    if ours is None and not root.handlers:
        ours = logging.StreamHandler(sys.stderr)
        ours.set_name(_HANDLER_NAME)
        root.addHandler(ours)
    if ours is not None:
        ours.setFormatter(formatter(log_format))
    root.setLevel(level)
