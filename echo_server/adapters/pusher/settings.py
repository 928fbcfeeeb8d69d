"""The Pusher wire's part of ``laravel-echo-server.json``: ``"pusher": {"activityTimeoutMs",
"signinTimeoutMs"}``. The activity timeout's default is the endpoint's own (``PusherOptions``)."""

from __future__ import annotations

from typing import Any

from echo_common.values import milliseconds

from .endpoint import PusherOptions

_DEFAULT = PusherOptions()
# With `jwt.required`, the time a Pusher connection has to `pusher:signin` unless configured.
SIGNIN_TIMEOUT = 30.0


def pusher_timeouts(section: Any) -> tuple[float, float]:
    """The silence after which the server pings a Pusher client (what pusher-js is told), and
    the time it has to sign in when it must (with `jwt.required`: the caller knows)."""
    section = section or {}
    if not isinstance(section, dict):
        raise ValueError("`pusher` must be an object")
    activity = milliseconds(section.get("activityTimeoutMs",
                                        _DEFAULT.activity_timeout * 1000),
                            "pusher.activityTimeoutMs")
    signin = milliseconds(section.get("signinTimeoutMs", SIGNIN_TIMEOUT * 1000),
                          "pusher.signinTimeoutMs")
    if activity <= 0:
        raise ValueError("pusher.activityTimeoutMs must be positive")
    return activity, signin
