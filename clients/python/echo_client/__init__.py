"""Async Laravel Echo client for Python services and tests (see ``client.py``).

    from echo_client import EchoClient

    async with EchoClient("http://127.0.0.1:6001", token=jwt) as echo:
        echo.channel("leads-management").listen(".lead.assigned", handle)

Needs python-socketio with its asyncio client (``pip install -e '.[client]'``).
"""

from .client import Channel, EchoClient, PresenceChannel, PrivateChannel, format_event

__all__ = ["Channel", "EchoClient", "PresenceChannel", "PrivateChannel", "format_event"]
