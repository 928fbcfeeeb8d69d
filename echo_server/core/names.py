"""Laravel's channel kinds, by name: the same rules for every wire protocol."""

from __future__ import annotations


def is_private(channel: str) -> bool:
    """Private or presence: the reference matches ``/private-.*/`` and
    ``/presence-.*/`` anywhere in the name (``orders.private-notes`` needs auth)."""
    return "private-" in channel or "presence-" in channel


def is_presence(channel: str) -> bool:
    return channel.startswith("presence-")


def is_client_event(event: str) -> bool:
    return "client-" in event
