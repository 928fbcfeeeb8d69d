"""Drive real laravel-echo / socket.io-client stacks from pytest.

The protocol sheet is only as good as the clients that will connect in production, so the
compatibility tests talk to the server through the very npm packages a Laravel frontend ships,
driven by ``tests/node/echo_client.mjs`` over JSON lines. See ``tests/node/README.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
DRIVER = NODE_DIR / "echo_client.mjs"
STACKS = ("echo1-sio2", "echo2-sio2", "echo2-sio4", "echo1-sio4", "echo2-reverb", "echo2-pusher")

# Redis messages of several MB are part of the protocol; asyncio's 64 KiB default line limit
# would turn them into a reader crash instead of a test result.
_LINE_LIMIT = 64 * 1024 * 1024
_STDERR_KEEP = 64 * 1024

# A wanted value, or a predicate over the received value.
Matcher = Any


class NodeClientError(AssertionError):
    """Raised as an assertion so pytest reports it as a failed expectation, not a crash."""


def node_clients_available() -> bool:
    """Lets test modules skip cleanly on machines without Node or ``npm install``."""
    return shutil.which("node") is not None and (NODE_DIR / "node_modules").is_dir()


def _matches(msg: Mapping[str, Any], type_: str, match: Mapping[str, Matcher]) -> bool:
    if msg.get("type") != type_:
        return False
    for key, want in match.items():
        if key not in msg:
            return False
        got = msg[key]
        if callable(want):
            if not want(got):
                return False
        elif got != want:
            return False
    return True


class NodeEchoClient:
    """One simulated browser tab: a Node process running Echo against ``url``.

    Output lines are buffered in a backlog rather than a queue so that tests can assert on
    messages in whatever order they care about (presence and event lines interleave freely).
    """

    def __init__(
        self,
        stack: str,
        url: str,
        *,
        transports: str | Sequence[str] | None = None,
        query: Mapping[str, str] | None = None,
        auth_token: str | None = None,
        csrf_token: str | None = None,
        auth_headers: Mapping[str, str] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        reconnection: bool | None = None,
        reconnection_delay: int | None = None,
        reconnection_delay_max: int | None = None,
        randomization_factor: float | None = None,
        raw: bool = False,
        local_address: str | None = None,
        echo_options: Mapping[str, Any] | None = None,
        extra_args: Iterable[str] = (),
        node: str = "node",
        env: Mapping[str, str] | None = None,
    ) -> None:
        if stack not in STACKS:
            raise ValueError(f"unknown stack {stack!r}; expected one of {STACKS}")
        self.stack = stack
        self.url = url
        args = [str(DRIVER), "--stack", stack, "--url", url]
        if transports is not None:
            tr = transports if isinstance(transports, str) else ",".join(transports)
            args += ["--transports", tr]
        for key, value in (query or {}).items():
            args += ["--query", f"{key}={value}"]
        if auth_token is not None:
            args += ["--auth-token", auth_token]
        if csrf_token is not None:
            args += ["--csrf-token", csrf_token]
        for key, value in (auth_headers or {}).items():
            args += ["--auth-header", f"{key}={value}"]
        for key, value in (extra_headers or {}).items():
            args += ["--extra-header", f"{key}={value}"]
        if reconnection is not None:
            args += ["--reconnection", "true" if reconnection else "false"]
        if reconnection_delay is not None:
            args += ["--reconnection-delay", str(reconnection_delay)]
        if reconnection_delay_max is not None:
            args += ["--reconnection-delay-max", str(reconnection_delay_max)]
        if randomization_factor is not None:
            args += ["--randomization-factor", str(randomization_factor)]
        if raw:
            args.append("--raw")
        if local_address is not None:
            args += ["--local-address", local_address]
        for key, value in (echo_options or {}).items():
            args += ["--echo-option", f"{key}={json.dumps(value)}"]
        args += list(extra_args)
        self.argv: list[str] = [node, *args]
        self._env = dict(env) if env is not None else None

        self.history: list[dict[str, Any]] = []
        # Receipt times (loop.time()) for timing assertions, kept apart so messages stay
        # comparable with plain dict equality.
        self.timeline: list[tuple[float, dict[str, Any]]] = []
        self._backlog: list[dict[str, Any]] = []
        self._stderr = bytearray()
        self._changed = asyncio.Condition()
        self._eof = False
        self._ids = itertools.count(1)
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    @property
    def stderr(self) -> str:
        return self._stderr.decode("utf-8", "replace")

    async def start(self, *, ready_timeout: float = 10.0) -> dict[str, Any]:
        """Waits for ``ready`` so a broken npm install fails here, not in the first expect."""
        env = {**os.environ, **self._env} if self._env is not None else None
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=_LINE_LIMIT,
            env=env,
        )
        self._tasks = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]
        try:
            return await self.expect("ready", timeout=ready_timeout)
        except BaseException:
            await self.close()
            raise

    async def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            while line := await self._proc.stdout.readline():
                try:
                    msg = json.loads(line)
                except ValueError:
                    msg = {"type": "unparsed", "line": line.decode("utf-8", "replace")}
                if not isinstance(msg, dict):
                    msg = {"type": "unparsed", "line": line.decode("utf-8", "replace")}
                async with self._changed:
                    self.timeline.append((asyncio.get_running_loop().time(), msg))
                    self.history.append(msg)
                    self._backlog.append(msg)
                    self._changed.notify_all()
        finally:
            async with self._changed:
                self._eof = True
                self._changed.notify_all()

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while chunk := await self._proc.stderr.read(4096):
            self._stderr += chunk
            if len(self._stderr) > _STDERR_KEEP:
                del self._stderr[: len(self._stderr) - _STDERR_KEEP]

    def send(self, cmd: Mapping[str, Any]) -> None:
        if self._proc is None or self._proc.stdin is None or self._proc.stdin.is_closing():
            raise NodeClientError(f"node client is not running ({self.stack})")
        self._proc.stdin.write(json.dumps(cmd).encode() + b"\n")

    def _take(self, type_: str, match: Mapping[str, Matcher]) -> dict[str, Any] | None:
        for i, msg in enumerate(self._backlog):
            if _matches(msg, type_, match):
                return self._backlog.pop(i)
        return None

    def _failure(self, what: str, type_: str, match: Mapping[str, Matcher], timeout: float) -> str:
        shown = {k: (v if not callable(v) else "<predicate>") for k, v in match.items()}
        recent = "\n  ".join(json.dumps(m)[:500] for m in self.history[-25:])
        return (
            f"[{self.stack}] {what} waiting {timeout}s for type={type_!r} {shown}\n"
            f"returncode={self.returncode}\n"
            f"last output lines:\n  {recent or '(none)'}\n"
            f"stderr:\n{self.stderr[-4000:] or '(empty)'}"
        )

    async def expect(self, type: str, timeout: float = 5.0, **match: Matcher) -> dict[str, Any]:
        """Takes the oldest matching line, so repeated expects consume repeated events.

        A match value may be a predicate, for fields whose exact value a test cannot know.
        """
        try:
            async with asyncio.timeout(timeout), self._changed:
                while True:
                    found = self._take(type, match)
                    if found is not None:
                        return found
                    if self._eof:
                        raise NodeClientError(self._failure("process ended", type, match, timeout))
                    await self._changed.wait()
        except TimeoutError:
            raise NodeClientError(self._failure("timed out", type, match, timeout)) from None

    async def expect_none(self, type: str, within: float = 0.5, **match: Matcher) -> None:
        """Proves a negative (toOthers, no cross-channel leaks) by waiting out a quiet window."""
        try:
            async with asyncio.timeout(within), self._changed:
                while (msg := self._take(type, match)) is None:
                    if self._eof:
                        return
                    await self._changed.wait()
        except TimeoutError:
            return
        raise NodeClientError(
            f"[{self.stack}] unexpected {json.dumps(msg)[:500]}\nstderr:\n{self.stderr[-4000:]}"
        )

    async def command(self, cmd: Mapping[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Waits for the ack so that later assertions see the command's effects in order."""
        cmd_id = next(self._ids)
        self.send({**cmd, "id": cmd_id})
        ack = await self.expect("ack", timeout=timeout, id=cmd_id)
        if not ack.get("ok", False):
            err = self._take("error", {"id": cmd_id})
            detail = err.get("message") if err else "no error line"
            raise NodeClientError(f"[{self.stack}] command {dict(cmd)} failed: {detail}")
        return ack

    async def socket_id(self, timeout: float = 5.0) -> str | None:
        """Echo.socketId(): what Laravel would receive as X-Socket-ID from this tab."""
        await self.command({"cmd": "socket_id"}, timeout=timeout)
        msg = await self.expect("socket_id", timeout=timeout)
        return msg["socketId"]

    def backlog(self, type_: str | None = None) -> list[dict[str, Any]]:
        """Unconsumed lines, for assertions about everything that arrived (e.g. counts)."""
        return [m for m in self._backlog if type_ is None or m.get("type") == type_]

    async def close(self, timeout: float = 3.0) -> None:
        """Always reaps the process, so a failing test cannot leak clients into the next one."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None and proc.stdin is not None and not proc.stdin.is_closing():
            with contextlib.suppress(Exception):
                self.send({"cmd": "exit"})
                await proc.stdin.drain()
            with contextlib.suppress(Exception):
                proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        for task in self._tasks:
            if not task.done():
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(task, 1.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
