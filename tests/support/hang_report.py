"""What a hung test was waiting for. pytest-timeout shows the threads' stacks, and in an
asyncio test that is only the event loop's ``select``. A moment before the timeout, this
writes the stack of every pending asyncio task to stderr, which the failure report shows.
The loop is idle in ``select`` by then, so reading the tasks from this thread is safe
enough for a diagnosis."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading

AHEAD = 3.0  # seconds before the timeout


def _report() -> None:
    tasks = [o for o in gc.get_objects() if isinstance(o, asyncio.Task) and not o.done()]
    sys.stderr.write(f"+++ {len(tasks)} asyncio tasks pending {AHEAD:.0f} s before the "
                     "timeout +++\n")
    for task in tasks:
        task.print_stack(file=sys.stderr)


def arm(timeout: float) -> threading.Timer | None:
    if timeout <= AHEAD:
        return None
    timer = threading.Timer(timeout - AHEAD, _report)
    timer.daemon = True
    timer.start()
    return timer
