"""Where an isolated app's Socket.IO pages connect: its host names (on the default path) and
a path of its own (on any host name). Every app's are held in the server's memory
(adapters/socketio_apps.py) and matched against what any client sends, so each is bounded,
and a path is one the router can never take for another of its routes: it may not be, hold
or sit under one of ``RESERVED_PATHS`` (the server's other routes, and the default app's
Socket.IO path), nor end in the client bundle's name, served under it.
"""

from __future__ import annotations

import re
from typing import Any

MAX_HOSTS = 100
MAX_HOST_LENGTH = 253
MAX_PATH_LENGTH = 200
RESERVED_PATHS = ("/app", "/apps", "/users", "/metrics", "/status", "/status.json",
                  "/healthz", "/readyz", "/demo", "/socket.io")
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_-]+(\.[a-z0-9_-]+)*)\Z")
_PATH = re.compile(r"(/[A-Za-z0-9_~.-]+)+\Z")
# The Socket.IO client bundle: served under each path, and what `install-client` fetches.
BUNDLE = ("socket.io.js", "socket.io.js.map")
_NO_SEGMENT = frozenset({".", "..", *BUNDLE})


def overlaps(path: str, other: str) -> bool:
    """One path is the other or sits under it: a router could take one for the other."""
    return path == other or path.startswith(other + "/") or other.startswith(path + "/")


def path_problem(path: Any) -> str | None:
    """Why ``path`` (without its trailing slash) cannot be an app's Socket.IO path (None:
    it can)."""
    if not isinstance(path, str) or len(path) > MAX_PATH_LENGTH or not _PATH.match(path) or (
            _NO_SEGMENT.intersection(path.split("/"))):
        return (f"must be a path like /tenant/socket.io (letters, digits, \"_~.-\" between "
                f"slashes, at most {MAX_PATH_LENGTH} characters)")
    taken = next((reserved for reserved in RESERVED_PATHS if overlaps(path, reserved)), None)
    if taken is not None:
        return f"may not be, hold or sit under {taken} (another route of the server)"
    return None


def host_names(hosts: Any) -> tuple[str, ...] | None:
    """The host names as a Host header's name compares with them (lower case, once each),
    or None when ``hosts`` is not a list of at most ``MAX_HOSTS`` of them without a port."""
    if not (isinstance(hosts, list) and len(hosts) <= MAX_HOSTS and all(
            isinstance(h, str) and len(h) <= MAX_HOST_LENGTH and _HOST.match(h.lower())
            for h in hosts)):
        return None
    return tuple(dict.fromkeys(h.lower() for h in hosts))
