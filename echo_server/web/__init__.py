"""The HTTP side: the API, the Pusher HTTP API (``pusher_auth``: its signatures), /metrics
(``loop_histogram``: the fan-out's histogram), the status page, the demo page's files, and
where the files the server hands out are read from (the Socket.IO protocol's socket.io.js
bundle too, ``adapters/socketio_bundle.py``). It reads the core's ``ServerState`` and never
takes the server object."""

from __future__ import annotations

import os
from pathlib import Path

# Package data (a wheel built after the set-up carries the bundle and the demo page).
PACKAGE_STATIC = Path(__file__).resolve().parent.parent / "static"


def static_dir() -> Path:
    """Where the bundle and the demo page are read from: ``ECHO_SERVER_STATIC_DIR`` moves
    the whole directory."""
    override = os.environ.get("ECHO_SERVER_STATIC_DIR")
    return Path(override) if override else PACKAGE_STATIC
