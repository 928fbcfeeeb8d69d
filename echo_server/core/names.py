"""Laravel's channel kinds, by name: the same rules for every wire protocol."""

from __future__ import annotations

USER_CHANNEL = "#server-to-user-"  # Pusher's: events to every connection of a signed-in user


def is_private(channel: str) -> bool:
    """Needs an authorization: private or presence, where the reference matches
    ``/private-.*/`` and ``/presence-.*/`` anywhere in the name (``orders.private-notes``
    needs auth), and a user's own channel, whichever client asks."""
    return "private-" in channel or "presence-" in channel or channel.startswith(USER_CHANNEL)


def is_presence(channel: str) -> bool:
    return channel.startswith("presence-")


def is_client_event(event: str) -> bool:
    return "client-" in event
