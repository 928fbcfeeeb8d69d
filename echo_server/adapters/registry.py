"""The wire protocols the server serves, one line each (see ``adapters/protocols.py``): each
is built from an ``Assembly`` alone and routed by what it declares, so adding one never
touches ``server.py``. The order is the routing's: a path two protocols claim goes to the
first."""

from __future__ import annotations

from . import socketio_protocol
from .protocols import ProtocolFactory
from .pusher import protocol as pusher_protocol

PROTOCOLS: tuple[ProtocolFactory, ...] = (socketio_protocol.served, pusher_protocol.served)
