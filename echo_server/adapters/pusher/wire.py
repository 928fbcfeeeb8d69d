"""Pusher's frames for the core's events: ``{"event","channel","data"}`` with ``data`` a
JSON *string* (pusher-js parses it), built once per event and written to every recipient;
presence in ``pusher_internal:*`` events with string user ids."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from echo_common.jsoncodec import dumps, dumps_bytes, loads

from ...apps.tags import untagged
from ...core.connection import Item
from ...core.fanout import MEMBER_ADDED, MEMBER_REMOVED
from ...transport.websocket import CLOSE_NORMAL, encode_frame
from ..coalesce import write_coalesced
from .connection import PusherConnection, message


def user_id_text(value: Any) -> str:
    """Pusher's user ids are strings; Laravel's are often numbers."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else dumps(value)


_heads: dict[tuple[str, str], bytes] = {}
HEADS_MAX = 4096


def _head(event: str, channel: str) -> bytes:
    """``{"event":…,"channel":…,"data":`` repeats from event to event: built once."""
    key = (event, channel)
    head = _heads.get(key)
    if head is None:
        if len(_heads) >= HEADS_MAX:
            _heads.clear()
        head = _heads[key] = (b'{"event":' + dumps_bytes(event) + b',"channel":'
                              + dumps_bytes(untagged(channel)) + b',"data":')
    return head


def _member(member_json: str, added: bool) -> str:
    member = loads(member_json)
    user_id = user_id_text(member.get("user_id"))
    if not added:
        return dumps({"user_id": user_id})
    return dumps({"user_id": user_id, "user_info": member.get("user_info")})


class PusherWire:
    """The core's ``Wire`` for Pusher connections."""

    __slots__ = ()

    def _frame(self, channel: str, event: str, data_json: str | bytes,
               sender: Any = None) -> bytes:
        if sender is not None and event.startswith("client-"):
            # A whisper on a presence channel names its sender, as Pusher's do.
            member = (sender.state.presence or {}).get(channel)
            if member is not None:
                text = data_json if isinstance(data_json, str) else data_json.decode("utf-8")
                return encode_frame(
                    message(event, untagged(channel), text)[:-1]
                    + b',"user_id":' + dumps(user_id_text(member.user_id)).encode() + b"}")
        if event in (MEMBER_ADDED, MEMBER_REMOVED):
            added = event == MEMBER_ADDED
            event = "pusher_internal:member_added" if added else "pusher_internal:member_removed"
            data_json = _member(data_json if isinstance(data_json, str)
                                else data_json.decode("utf-8"), added)
        elif type(data_json) is bytes:
            data_json = data_json.decode("utf-8")
        # The event's data as a JSON string: what pusher-js parses, and Laravel sends.
        return encode_frame(b"".join((_head(event, channel), dumps_bytes(data_json), b"}")))

    def send(self, members: Collection[PusherConnection], channel: str,
             event: str, data_json: str | bytes, offset: int | str,
             exclude: PusherConnection | None) -> int:
        frame = self._frame(channel, event, data_json, exclude)
        sent = 0
        for connection in members:
            if connection is not exclude:
                connection.ws.write(frame)
                sent += 1
        return sent

    def send_batch(self, batch: Sequence[Item[PusherConnection]]) -> int:
        return write_coalesced([
            (members, self._frame(channel, event, data_json, exclude), b"", exclude)
            for members, channel, event, data_json, _offset, exclude in batch], False)

    def subscribed(self, connection: PusherConnection, channel: str,
                   members: list[dict[str, Any]] | None) -> None:
        channel = untagged(channel)
        if members is None:
            connection.send("pusher_internal:subscription_succeeded", channel, "{}")
            return
        users = {user_id_text(m.get("user_id")): m.get("user_info") for m in members}
        connection.send("pusher_internal:subscription_succeeded", channel, dumps(
            {"presence": {"count": len(users), "ids": list(users), "hash": users}}))

    def cache_miss(self, connection: PusherConnection,
                   channel: str) -> None:
        connection.send("pusher:cache_miss", untagged(channel))

    def refused(self, connection: PusherConnection, channel: str,
                status: int) -> None:
        # With the channel, so pusher-js routes it to that channel and Echo's .error() fires.
        channel = untagged(channel)
        connection.send("pusher:subscription_error", channel, {
            "type": "AuthError", "error": f"Unable to subscribe to {channel}",
            "status": status})

    def disconnect(self, connection: PusherConnection, reason: str) -> None:
        connection.error(4009, f"Connection is unauthorized ({reason})")
        connection.ws.close(4009 if reason != "server shutting down" else CLOSE_NORMAL)

    def gone(self, connection: PusherConnection) -> bool:
        return connection.ws.closed
