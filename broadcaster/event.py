"""The one event shape every source produces and every publisher writes.

``data`` stays JSON text from source to socket: the server never needs to look
inside the payload, so it is encoded once (by the publisher) and copied into
one frame per event, however many clients receive it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .jsoncodec import dumps, loads


@dataclass(slots=True, frozen=True)
class BroadcastEvent:
    channel: str
    event: str
    data: str = "null"
    socket: str | None = None


class BadMessage(ValueError):
    """A message a source could not turn into an event; ``kind`` labels the metric."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def parse_laravel_message(channel: str, payload: bytes | str) -> BroadcastEvent:
    """Decode ``{"event", "data", "socket"}`` as Laravel publishes it.

    Unlike the reference, a message without a string ``event`` is rejected: it
    would otherwise reach clients as ``42[null, ...]``, which socket.io-client
    2.x cannot decode.
    """
    try:
        message = loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadMessage("bad_json", f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise BadMessage("bad_message", "not a JSON object")
    event = message.get("event")
    if not isinstance(event, str) or not event:
        raise BadMessage("bad_message", "no string 'event'")
    socket = message.get("socket")
    data = message.get("data")
    return BroadcastEvent(
        channel=channel,
        event=event,
        data=dumps(data),
        socket=socket if isinstance(socket, str) and socket else None,
    )
