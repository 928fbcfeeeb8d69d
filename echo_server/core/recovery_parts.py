"""Connection-state recovery's parts, built before the core and handed to it whole.

The history, the parked sessions and (with recovery on any instance) the sessions' records in
Redis live and die together: with recovery off there are none of them, with it on there are
all three but the last, which comes with the cluster and a Redis stream as the only source.
One object says so, once, at construction, so the core asks one question ("is recovery on?")
where it asked two (history? sessions?) and asserted the second, and nothing is patched in
after the core exists (``positions`` reach the history and fan-out through their
constructors).
"""

from __future__ import annotations

from dataclasses import dataclass

from .history import History
from .positions import Positions
from .recovery import RecoveryOptions, Sessions
from .shared_sessions import SharedSessions


@dataclass(frozen=True, slots=True)
class RecoveryParts:
    history: History
    sessions: Sessions
    # Recovery on other instances too (the cluster, and one Redis stream as the only source).
    shared: SharedSessions | None = None

    @classmethod
    def build(cls, options: RecoveryOptions,
              shared: SharedSessions | None = None) -> RecoveryParts:
        positions = shared.positions if shared is not None else None
        return cls(History(options.history, positions), Sessions(options), shared)

    @property
    def positions(self) -> Positions | None:
        """Where this instance is in the stream and the relay, when offsets must say it."""
        return self.history.positions  # handed to the history by `build`, from `shared`
