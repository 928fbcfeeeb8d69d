"""Event sources for the echo server and the publisher services use, chosen by URL.

Services import only this package (never ``echo_server``)::

    from broadcaster import Broadcaster
    from broadcaster.events import lead_assigned

    async with Broadcaster("redis://127.0.0.1:6379/0?prefix=laravel_database_") as b:
        await b.broadcast(lead_assigned(lead, new_admin, old_admin, assigned_by))
"""

from .events import LaravelEvent
from .publisher import Broadcaster, SyncBroadcaster

__all__ = ["Broadcaster", "LaravelEvent", "SyncBroadcaster"]
