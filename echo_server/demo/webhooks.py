"""The demo backend's webhook endpoint, written as the Laravel app would write it: what comes
in is checked the way pusher-php-server's ``webhook()`` checks it (the app's key, the hex
HMAC-SHA256 of the raw body with its secret), a redelivered batch is dropped by its
``X-Webhook-Id``, and the presence channel's ``member_added`` / ``member_removed`` keep the
set of admins online: what Laravel knows without asking echo-server over and over.

The check is written here, not taken from ``echo_server.webhooks``: the receiver plays the
other side, so the demo only proves the format verifies if it verifies it independently.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from typing import Any

REMEMBERED_IDS = 1024  # batches in flight are retried long before this many newer ones


class WebhookRefused(Exception):
    """Not a webhook from our echo server (or not one we can read): answered with
    ``status``, and echo-server retries it (a wrong secret shows in its log)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class WebhookInbox:
    """Verified, once: a batch is handed on only when it is signed with the app's secret
    and was not taken before (a 2xx that got lost makes echo-server send the same id and
    body again; applying an old ``member_added`` twice could bring back someone who left)."""

    def __init__(self, key: str, secret: str, remember: int = REMEMBERED_IDS) -> None:
        self._key = key.encode()
        self._secret = secret.encode()
        self._remember = remember
        self._taken: OrderedDict[str, None] = OrderedDict()  # bounded: the newest ids

    def take(self, headers: Mapping[str, str], body: bytes,
             apply: Callable[[list[dict[str, Any]]], None]) -> bool:
        """``apply`` the batch's events; False when it is a repeat (nothing applied).
        The id is remembered after ``apply`` returned, so a batch that failed half-way is
        applied again when it comes back."""
        expected = hmac.new(self._secret, body, hashlib.sha256).hexdigest().encode()
        given_key = headers.get("X-Pusher-Key", "").encode()
        given_signature = headers.get("X-Pusher-Signature", "").encode()
        # Both compared in constant time, and both always: the answer's timing tells nothing.
        key_ok = hmac.compare_digest(given_key, self._key)
        if not (hmac.compare_digest(given_signature, expected) and key_ok):
            raise WebhookRefused(401, "invalid webhook signature")
        ident = headers.get("X-Webhook-Id", "")
        if ident and ident in self._taken:
            return False
        try:
            events = json.loads(body)["events"]
        except (ValueError, TypeError, KeyError) as error:
            raise WebhookRefused(400, f"not a webhook body: {error}") from None
        if not isinstance(events, list):
            raise WebhookRefused(400, "not a webhook body: events is not a list")
        apply([event for event in events if isinstance(event, dict)])
        if ident:
            self._taken[ident] = None
            if len(self._taken) > self._remember:
                self._taken.popitem(last=False)
        return True


class OnlineAdmins:
    """Who is online in one presence channel, per its webhooks. ``channel_occupied`` and
    ``channel_vacated`` mean nobody was (is) in it: they clear the set, so members an
    echo-server restart never reported leaving do not stay online for ever."""

    def __init__(self, channel: str, admins: Collection[int]) -> None:
        self.channel = channel
        self._admins = admins
        self._online: set[int] = set()

    @property
    def ids(self) -> list[int]:
        return sorted(self._online)

    def apply(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            if event.get("channel") != self.channel:
                continue
            name = event.get("name")
            if name in ("channel_occupied", "channel_vacated"):
                self._online.clear()
            elif name in ("member_added", "member_removed"):
                admin_id = self._admin_id(event.get("user_id"))
                if admin_id is None:
                    continue
                if name == "member_added":
                    self._online.add(admin_id)
                else:
                    self._online.discard(admin_id)

    def _admin_id(self, user_id: Any) -> int | None:
        """Pusher's user ids are strings; the demo's admins are numbered."""
        try:
            admin_id = int(user_id)
        except (TypeError, ValueError):
            return None
        return admin_id if admin_id in self._admins else None
