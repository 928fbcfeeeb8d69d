"""A command run as a real process, its output (stdout and stderr together) collected line
by line, so a test waits for the line it expects instead of sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import Sequence
from pathlib import Path


class LoggedProcess:
    def __init__(self, argv: Sequence[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._new_line = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, cwd=str(self.cwd), env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
            self._new_line.set()

    async def wait_for_line(self, pattern: str, timeout: float = 15.0) -> str:
        """The first line (seen so far or to come) matching ``pattern``; fails with the
        output when the process ends or ``timeout`` passes without one."""
        regex = re.compile(pattern)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if regex.search(line):
                    return line
            seen = len(self.lines)
            exited = self._reader is not None and self._reader.done()
            remaining = deadline - loop.time()
            if exited or remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} "
                                     f"({'exited' if exited else 'timed out'}):\n"
                                     + "\n".join(self.lines))
            self._new_line.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_line.wait(), remaining)

    async def wait_exit(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)
        return code

    async def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then the exit code once every line is read."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait_exit(timeout)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
