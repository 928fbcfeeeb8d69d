"""An echo-server instance as a real process on the test's Redis, so a test can kill it with
SIGKILL (what a crashed host does) while in-process instances carry on."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import _deep_update, free_port, redis_config
from tests.support.http import http_client


class At:
    """What RawWebSocket.connect and server_url need of a server: its port."""

    def __init__(self, port: int) -> None:
        self.port = port


@asynccontextmanager
async def instance_process(tmp_path: Path, redis_url: str, options: dict[str, Any],
                           port: int | None = None, env: dict[str, str] | None = None
                           ) -> AsyncIterator[tuple[asyncio.subprocess.Process, At]]:
    """Started from a laravel-echo-server.json in ``tmp_path``; yielded once /readyz says it
    serves (its cluster, presence and webhooks started); killed at the end if still alive.
    ``env`` is added to the process's environment (e.g. ``SSL_CERT_FILE``)."""
    port = port or free_port()
    config = {"host": "127.0.0.1", "port": port, **options}
    _deep_update(config, redis_config(redis_url))
    (tmp_path / "laravel-echo-server.json").write_text(json.dumps(config))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LARAVEL_ECHO_SERVER_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "echo_server", "start", "--dir", str(tmp_path), cwd=str(tmp_path),
        env={**environ, **(env or {})}, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        async with http_client() as http:
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert proc.returncode is None, "the instance did not start"
                await asyncio.sleep(0.05)
        yield proc, At(port)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
