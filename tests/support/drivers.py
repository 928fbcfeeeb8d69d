"""What the Python sides of the JSON-lines Node drivers share (status page, demo)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
NODE_DIR = Path(__file__).resolve().parents[1] / "node"


def browser_missing() -> str | None:
    """Why a browser test cannot run here (the test command installs what it can), or None."""
    if not CHROMIUM.exists():
        return "no /usr/bin/chromium (`apt-get install chromium`; ./scripts/test installs it)"
    if shutil.which("node") is None:
        return "no node on PATH"
    if not (NODE_DIR / "node_modules" / "playwright-core").is_dir():
        return "playwright-core not installed: run `npm ci --prefix tests/node`"
    return None


async def stop_driver(proc: asyncio.subprocess.Process | None,
                      reader: asyncio.Task[None] | None) -> None:
    """Ask the driver to exit (it closes its browser), kill it if it does not, and stop
    reading its output: no orphaned Chromium survives a failed test."""
    if proc is None:
        return
    if proc.returncode is None and proc.stdin is not None:
        with contextlib.suppress(Exception):
            proc.stdin.write(b'{"cmd":"exit"}\n')
            await proc.stdin.drain()
            proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()
    if reader is not None:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
