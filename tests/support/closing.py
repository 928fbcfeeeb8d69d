"""Things a test makes that must be closed at its end, passed or failed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any


@contextlib.asynccontextmanager
async def closing_each() -> AsyncIterator[list[Any]]:
    """A list to put what has an async ``close()`` in; each is closed at the end."""
    made: list[Any] = []
    try:
        yield made
    finally:
        for thing in made:
            await thing.close()
