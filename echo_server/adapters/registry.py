"""The wire protocols served beside Socket.IO and Pusher, one line each (see
``adapters/protocols.py``). Socket.IO and Pusher are declared the same way by the server,
which builds them from options only it reads; a protocol listed here is built from an
``Assembly`` alone, so adding one never touches ``server.py``."""

from __future__ import annotations

from .protocols import ProtocolFactory

PROTOCOLS: tuple[ProtocolFactory, ...] = ()
