"""Bad input is counted every time and logged at a bounded rate.

One place for it, so a flood of garbage from one client costs a counter
increment per message and one log line per second per kind, not a log storm.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

log = logging.getLogger("echo_server.errors")


class ErrorLog:
    def __init__(self, interval: float = 1.0) -> None:
        self.counts: Counter[str] = Counter()
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def report(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) < self.interval:
            self._suppressed[kind] += 1
            return
        self._last[kind] = now
        skipped = self._suppressed.pop(kind, 0)
        suffix = f" ({skipped} more of this kind since the last report)" if skipped else ""
        log.warning("%s: %s%s", kind, message, suffix, extra={"kind": kind})
