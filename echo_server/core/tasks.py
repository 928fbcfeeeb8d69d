"""Background loops' end, in one place: every owner of such loops (cluster, session records,
the reloader) stops them the same way."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable


async def cancel_tasks(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel them and wait until they are gone, whatever they raise."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
