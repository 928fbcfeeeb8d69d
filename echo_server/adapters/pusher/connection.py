"""One pusher-js client: what the core holds in its rooms."""

from __future__ import annotations

import time
from typing import Any

from echo_common.jsoncodec import dumps

from ...apps.model import App
from ...core.connection import ClientState
from ...transport.deadlines import Bucket
from ...transport.ids import new_id
from ...transport.websocket import encode_frame
from ...transport.wsconn import WebSocketConnection


def message(event: str, channel: str | None, data: Any) -> bytes:
    """One Pusher message; ``data`` a str is sent as a JSON string, anything else as JSON."""
    parts = ['{"event":', dumps(event)]
    if channel is not None:
        parts += [',"channel":', dumps(channel)]
    if data is not None:
        parts += [',"data":', dumps(data)]
    parts.append("}")
    return "".join(parts).encode("utf-8")


class SignInWait:
    """A connection that must sign in (`jwt.required`): until when it may, and the subscribes
    it sent before it did, made once it has. Only such a connection, until it signs in, pays
    for the time it was opened."""

    __slots__ = ("deadline", "held", "size")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.held: list[dict[str, Any]] = []
        # The held subscribes' length as JSON, in all: kept as they come, so a new one's
        # check does not serialise those before it again.
        self.size = 0

    def hold(self, subscribe: dict[str, Any], size: int) -> None:
        """``subscribe`` (``size``: its length as JSON) waits for the sign-in."""
        self.held.append(subscribe)
        self.size += size

    def drop(self, channel: Any) -> None:
        """An unsubscribe before the sign-in (rare): that channel's subscribes wait no more."""
        self.held = [held for held in self.held if held["channel"] != channel]
        self.size = sum(len(dumps(held)) for held in self.held)


class PusherConnection:
    __slots__ = ("app", "due", "due_slot", "id", "last_seen", "pinged", "signin", "state",
                 "ws")

    def __init__(self, ws: WebSocketConnection, app: App) -> None:
        self.ws = ws
        self.app = app
        self.id = new_id()  # <digits>.<digits> while a Pusher app is configured
        self.state: ClientState = None  # type: ignore[assignment]  # set by the endpoint
        self.last_seen = time.monotonic()
        self.pinged = False  # a pusher:ping is out, unanswered
        self.signin: SignInWait | None = None  # set by the endpoint when it must sign in
        self.due: Bucket | None = None  # where the endpoint's Deadlines hold it
        self.due_slot = 0

    def send(self, event: str, channel: str | None = None, data: Any = None) -> None:
        self.ws.write(encode_frame(message(event, channel, data)))

    def error(self, code: int | None, text: str) -> None:
        self.send("pusher:error", None, {"code": code, "message": text})
