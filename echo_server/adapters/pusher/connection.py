"""One pusher-js client: what the core holds in its rooms."""

from __future__ import annotations

import time
from typing import Any

from echo_common.jsoncodec import dumps

from ...apps.model import App
from ...apps.rates import TokenBucket
from ...core.connection import ClientState
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


class PusherConnection:
    __slots__ = ("__weakref__", "app", "client_events", "id", "last_seen", "opened", "pinged",
                 "state", "waiting", "ws")

    def __init__(self, ws: WebSocketConnection, app: App) -> None:
        self.ws = ws
        self.app = app
        self.id = new_id()  # <digits>.<digits> while a Pusher app is configured
        self.state: ClientState = None  # type: ignore[assignment]  # set by the endpoint
        self.opened = self.last_seen = time.monotonic()
        self.pinged = False  # a pusher:ping is out, unanswered
        # With `jwt.required`: the subscribes that came before pusher:signin, held until it.
        self.waiting: list[dict[str, Any]] | None = None
        # Its app's maxClientEventsPerSecond, once it sends one (4301 beyond).
        self.client_events: TokenBucket | None = None

    def send(self, event: str, channel: str | None = None, data: Any = None) -> None:
        self.ws.write(encode_frame(message(event, channel, data)))

    def error(self, code: int | None, text: str) -> None:
        self.send("pusher:error", None, {"code": code, "message": text})
