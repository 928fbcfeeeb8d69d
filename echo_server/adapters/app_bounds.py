"""What each of an app's connections may do once in (channels, client events), whatever its
protocol, for the core to check (``core.limits.ConnectionBounds``): one place for both wires,
so that a pusher-js client and a Socket.IO page of one app are bounded as one. Its
``maxConnections`` is ``apps.seats.AppSeats``, which the process shares between them.
"""

from __future__ import annotations

from ..apps.model import App
from ..core.limits import ConnectionBounds


def app_bounds(app: App) -> ConnectionBounds | None:
    """What a connection of ``app`` may do beyond the server's bounds; None when the app
    sets none of them (most apps), and its connections hold nothing for it."""
    limits = app.limits
    if limits.max_channels_per_connection or not limits.client_events or app.rates.client_events:
        return write_bounds(app, ConnectionBounds())
    return None


def write_bounds(app: App, bounds: ConnectionBounds) -> ConnectionBounds:
    """``app``'s bounds, written into ``bounds``: every connection holding it follows the
    app's change."""
    bounds.max_channels = app.limits.max_channels_per_connection
    bounds.client_events = app.limits.client_events
    bounds.client_event_rate = app.rates.client_events
    return bounds
