"""The Pusher wire's part of ``laravel-echo-server.json``: ``"pusher": {"activityTimeoutMs",
"pongTimeoutMs", "signinTimeoutMs"}``. The keep-alive's defaults are the endpoint's own
(``PusherOptions``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from echo_common.values import milliseconds

from .endpoint import PusherOptions

_DEFAULT = PusherOptions()
# With `jwt.required`, the time a Pusher connection has to `pusher:signin` unless configured.
SIGNIN_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class PusherTimeouts:
    """Seconds. ``activity``: the silence after which the server pings a Pusher client (what
    pusher-js is told); ``pong``: then the time it has to answer anything, else 4201;
    ``signin``: the time it has to sign in when it must (with `jwt.required`: the caller
    knows)."""

    activity: float
    pong: float
    signin: float


def pusher_timeouts(section: Any) -> PusherTimeouts:
    section = section or {}
    if not isinstance(section, dict):
        raise ValueError("`pusher` must be an object")

    def timeout(key: str, default: float, *, positive: bool = True) -> float:
        name = f"pusher.{key}"
        value = milliseconds(section.get(key, default * 1000), name)
        if positive and value <= 0:
            raise ValueError(f"{name} must be positive")
        return value

    return PusherTimeouts(activity=timeout("activityTimeoutMs", _DEFAULT.activity_timeout),
                          pong=timeout("pongTimeoutMs", _DEFAULT.pong_timeout),
                          signin=timeout("signinTimeoutMs", SIGNIN_TIMEOUT, positive=False))
