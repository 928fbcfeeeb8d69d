"""What the Python sides of the JSON-lines Node drivers share (status page, demo)."""

from __future__ import annotations

import asyncio
import contextlib


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
