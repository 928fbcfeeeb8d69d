"""Background loops' end, in one place: every owner of such loops (cluster, session records,
the reloader, the Socket.IO apps' index) stops them the same way, and closes what it
replaced the same way (``close_later``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable


async def cancel_tasks(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel them and wait until they are gone, whatever they raise. Each is let start
    first: one cancelled before its first step never enters its body, so a ``finally`` there
    (``close_later``'s) would never run."""
    tasks = list(tasks)
    await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def close_later(closable: object, grace: float) -> None:
    """Closes ``closable`` (its ``close()``, if it has one) once what it started may have
    ended, ``grace`` seconds from now; cancelled (``cancel_tasks`` at shutdown), at once:
    either way it is closed, and its failure to close is nobody's."""
    try:
        await asyncio.sleep(grace)
    finally:
        close = getattr(closable, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(close())
