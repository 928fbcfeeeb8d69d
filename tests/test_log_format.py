"""Structured logs: `"log": {"format": "json"}` in laravel-echo-server.json, or
`ECHO_LOG_FORMAT=json`, makes `echo-server start` write one JSON object per line, with the
record's context and never a credential. Read from the output of the real process."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from echo_server.process.logformat import REDACTED, JsonFormatter, formatter
from tests.conftest import free_port
from tests.support.logged_process import LoggedProcess

BASE_OPTIONS: dict[str, Any] = {
    "host": "127.0.0.1", "database": "sqlite", "subscribers": {"http": True, "redis": False},
}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LARAVEL_ECHO_SERVER_", "ECHO_"))}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _records(lines: list[str]) -> list[dict[str, Any]]:
    """Every line as a log pipeline reads it: each must be a JSON object with the four
    fields and an ISO 8601 time."""
    records = []
    for line in lines:
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "message"} <= record.keys(), line
        assert datetime.datetime.fromisoformat(record["time"]).tzinfo is not None, line
        records.append(record)
    return records


@pytest.fixture
async def processes() -> AsyncIterator[list[LoggedProcess]]:
    started: list[LoggedProcess] = []
    yield started
    for process in started:
        await process.kill()


async def _server(tmp_path: Path, processes: list[LoggedProcess], options: dict[str, Any],
                  **env: str) -> tuple[LoggedProcess, int]:
    port = free_port()
    (tmp_path / "laravel-echo-server.json").write_text(
        json.dumps({**BASE_OPTIONS, **options, "port": port}), encoding="utf-8")
    process = LoggedProcess([sys.executable, "-m", "echo_server", "start", "--dir", str(tmp_path)],
                            cwd=tmp_path, env=_env(**env))
    processes.append(process)
    await process.start()
    await process.wait_for_line("listening on")
    return process, port


async def _status_line(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    answer = await reader.read()
    writer.close()
    return answer.split(b"\r\n", 1)[0]


async def _serving(port: int) -> None:
    """Until the server answers HTTP: from then on its SIGTERM handler is installed (it is
    not yet when "listening on" is logged), so a stop is the clean one."""
    request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert await _status_line(port, request) == b"HTTP/1.1 200 OK"


async def _refused_for_headers(port: int) -> bytes:
    """A request whose headers pass the 64 KiB bound: the server answers 431 and reports it."""
    return await _status_line(
        port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")


async def test_json_from_the_config_file(tmp_path: Path, processes) -> None:
    """Start-up, config notices, a rate-limited error and the shutdown: all JSON lines; the
    error line carries its kind as a field and is written once for a burst."""
    server, port = await _server(tmp_path, processes, {
        "log": {"format": "json"}, "clients": [{"appId": "app", "key": "k3y-never-logged"}]})
    refusals = 5
    for _ in range(refusals):
        assert await _refused_for_headers(port) == b"HTTP/1.1 431 Request Header Fields Too Large"
    await server.wait_for_line("headers_too_large")
    assert await server.stop() == 0

    records = _records(server.lines)
    messages = [r["message"] for r in records]
    assert any(m.startswith("echo-server listening on http://127.0.0.1:") for m in messages)
    assert any(r["logger"] == "echo_server.config" and r["level"] == "WARNING"
               for r in records), "the config notices are JSON too (logged while loading)"
    errors = [r for r in records if r.get("kind") == "headers_too_large"]
    assert 1 <= len(errors) < refusals, "one line per second per kind, not one per refusal"
    assert errors[0]["logger"] == "echo_server.errors" and errors[0]["level"] == "WARNING"
    assert errors[0]["message"] == ("headers_too_large: HTTP request refused with 431 "
                                    "Request Header Fields Too Large")
    assert messages[-1].startswith("shutting down")
    assert not any("k3y-never-logged" in line for line in server.lines)


async def test_environment_variable_wins_and_keys_are_redacted(tmp_path: Path,
                                                               processes) -> None:
    """ECHO_LOG_FORMAT=json over a file that says text. Without API clients the server makes
    up a development key and prints it with a curl command: in JSON, never the key."""
    server, port = await _server(tmp_path, processes, {"log": {"format": "text"}},
                                 ECHO_LOG_FORMAT="json")
    await _serving(port)
    assert await server.stop() == 0
    records = _records(server.lines)
    (dev,) = [r["message"] for r in records if "development client" in r["message"]]
    assert f"key={REDACTED}" in dev and f"auth_key={REDACTED}" in dev
    assert re.search(r"appId=[0-9a-f]{16}", dev), "the app id is no secret"
    assert not any(re.search(r"[0-9a-f]{32}", line) for line in server.lines), \
        "a generated key (32 hex digits) reached the log"


@pytest.mark.parametrize(("options", "env", "said"), [
    ({"log": {"format": "xml"}}, {}, "log format 'xml' (ECHO_LOG_FORMAT or log.format) is not "
                                     "one of 'text', 'json'"),
    ({}, {"ECHO_LOG_FORMAT": "yaml"}, "log format 'yaml'"),
    ({"log": "json"}, {}, '`log` must be an object, e.g. {"format": "json"}'),
])
async def test_unknown_format_stops_the_start(tmp_path: Path, processes, options, env,
                                              said: str) -> None:
    (tmp_path / "laravel-echo-server.json").write_text(
        json.dumps({**BASE_OPTIONS, **options, "port": free_port()}), encoding="utf-8")
    process = LoggedProcess([sys.executable, "-m", "echo_server", "start", "--dir",
                             str(tmp_path)], cwd=tmp_path, env=_env(**env))
    processes.append(process)
    await process.start()
    assert await process.wait_exit() == 1
    (error,) = [line for line in process.lines if line.startswith("Error: ")]
    assert said in error and str(tmp_path) in error


def test_context_fields_and_credentials() -> None:
    """What code attaches with ``extra=`` becomes fields; credentials never do, at any depth,
    nor in the message."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.log_format")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("subscribe to %s refused; retry with Bearer eyJhbGciOi.x.y",
                       "private-admin-dashboard.5",
                       extra={"socket": "Zx9_abc", "channel": "private-admin-dashboard.5",
                              "source": "redis://127.0.0.1:6379/0", "worker": 2,
                              "auth_token": "eyJhbGciOi.x.y", "appKey": "abc123",
                              "request": {"headers": {"Cookie": "laravel_session=s3ss10n",
                                                      "Authorization": "Bearer eyJ"},
                                          "path": "/broadcasting/auth?token=t0ken"}})
        try:
            raise ValueError("password=hunter2 refused")
        except ValueError:
            logger.exception("callback failed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == ("subscribe to private-admin-dashboard.5 refused; retry with "
                                f"Bearer {REDACTED}")
    assert (first["socket"], first["channel"], first["source"], first["worker"]) == (
        "Zx9_abc", "private-admin-dashboard.5", "redis://127.0.0.1:6379/0", 2)
    assert first["auth_token"] == REDACTED and first["appKey"] == REDACTED
    assert first["request"] == {"headers": {"Cookie": REDACTED, "Authorization": REDACTED},
                                "path": f"/broadcasting/auth?token={REDACTED}"}
    assert second["level"] == "ERROR" and "ValueError" in second["exception"]
    assert "hunter2" not in second["exception"]


def test_text_lines_cannot_be_forged() -> None:
    """A value from a client with a newline (a refused channel name) must not start a line
    of its own that reads as a record; nor may a carriage return or a terminal escape
    rewrite what is on screen. Escaped in the formatter, whatever the call site wrote."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter("text"))
    logger = logging.getLogger("tests.log_format.text")
    logger.addHandler(handler)
    logger.propagate = False
    forged = "2026-12-07 12:00:00 WARNING echo_server.api: admin key accepted"
    try:
        logger.warning("auth_failed: %s: status 401", f"private-x\n{forged}")
        logger.warning(f"subscribe to private-y\r{forged}\x1b[2K\u2028{forged}\x85 refused")
        try:
            raise ValueError("a reason")
        except ValueError:
            logger.exception("callback for %s failed", "private-z\nsecond")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()  # splits at \r, \u2028 and \x85 too
    assert lines[0].endswith("auth_failed: private-x\\n" + forged + ": status 401")
    assert lines[1].endswith("subscribe to private-y\\r" + forged + "\\x1b[2K\\u2028"
                             + forged + "\\x85 refused")
    assert lines[2].endswith("callback for private-z\\nsecond failed")
    assert lines[3] == "Traceback (most recent call last):"  # a traceback keeps its lines
    assert lines[-1] == "ValueError: a reason"
    assert not [line for line in lines if line.startswith(forged)]
