"""The one event shape every source produces and every publisher writes.

``data`` stays JSON text from source to socket: the server never needs to look
inside the payload, so it is encoded once (by the publisher) and copied into
one frame per event, however many clients receive it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from echo_common.jsoncodec import dumps, loads, members

from .phpjson import php_json_encode


@dataclass(slots=True)
class BroadcastEvent:
    """``data`` is JSON text: a ``str``, or its UTF-8 ``bytes`` as the Redis source's
    parser hands it over, so the hot path never decodes and re-encodes it."""

    # Not frozen: a frozen dataclass's __init__ goes through object.__setattr__, which
    # is 0.4 µs per event on the hot path. Nothing mutates one once built.
    channel: str
    event: str
    data: str | bytes = "null"
    socket: str | None = None
    # Its place in a log every reader sees alike (a Redis stream entry's id, ``~k`` for the
    # entry's k-th channel after the first): connection-state recovery on another instance.
    id: str | None = None


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
    fast = members(payload, _LARAVEL_MEMBERS, "data")
    if fast is not None:
        event, data, socket = fast
        if type(event) is str and event:
            return BroadcastEvent(channel, event, data,
                                  socket if type(socket) is str and socket else None)
    message = _decode_object(payload)
    event, data, socket = _event_fields(message)
    return BroadcastEvent(channel, event, data, socket)


_LARAVEL_MEMBERS = ("event", "data", "socket")


def _decode_object(payload: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(payload, Mapping):
        return payload
    try:
        message = loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadMessage("bad_json", f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise BadMessage("bad_message", "not a JSON object")
    return message


def _event_fields(message: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """(event, data as JSON text, socket or None) of a Laravel-shaped message."""
    event = message.get("event")
    if not isinstance(event, str) or not event:
        raise BadMessage("bad_message", "no string 'event'")
    socket = message.get("socket")
    return event, dumps(message.get("data")), socket if isinstance(socket, str) and socket \
        else None


# --------------------------------------------------------------------------- publishing

def laravel_data(data: Mapping[str, Any] | None, socket: str | None) -> dict[str, Any]:
    """``BroadcastEvent::getPayloadFromEvent``: ``array_merge(broadcastWith(), ['socket' => ...])``,
    so ``socket`` is the last key unless the payload already had one (whose place it keeps)."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise TypeError(f"event data must be a mapping (Laravel's broadcastWith() array), "
                        f"not {type(data).__name__}")
    payload = dict(data)
    payload["socket"] = socket
    return payload


def encode_laravel_message(event: str, data: Mapping[str, Any] | None,
                           socket: str | None = None) -> str:
    """The exact text RedisBroadcaster::broadcast() publishes: ``json_encode(['event' => ...,
    'data' => $payload, 'socket' => Arr::pull($payload, 'socket')])``; ``data`` is evaluated
    before the pull, which is why ``socket`` is in ``data`` too."""
    return php_json_encode({"event": event, "data": laravel_data(data, socket),
                            "socket": socket})


def encode_routed_message(channels: Sequence[str], event: str, data: Mapping[str, Any] | None,
                          socket: str | None = None) -> str:
    """Laravel's message plus the Echo channels it goes to, for transports whose own channel
    names cannot be Echo's (PostgreSQL NOTIFY; one stream for every channel)."""
    return php_json_encode({"channels": list(channels), "event": event,
                            "data": laravel_data(data, socket), "socket": socket})


def parse_routed_message(payload: bytes | str | Mapping[str, Any]) -> list[BroadcastEvent]:
    """``{"channels": [...], "event", "data", "socket"}``: one event per channel."""
    message = _decode_object(payload)
    channels = message.get("channels")
    if isinstance(channels, str):
        channels = [channels]
    if not (isinstance(channels, list) and channels
            and all(isinstance(c, str) and c for c in channels)):
        raise BadMessage("bad_message", "'channels' must be a non-empty list of channel names")
    event, data, socket = _event_fields(message)
    return [BroadcastEvent(channel, event, data, socket) for channel in channels]
