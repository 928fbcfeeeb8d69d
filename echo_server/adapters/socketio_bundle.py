"""``/socket.io/socket.io.js``: the socket.io-client 2.x browser bundle, under each path
Socket.IO is served at.

Pages written for laravel-echo-server load the client from the echo server
itself, so we serve the same bundle. It comes from npm at set-up
(``echo-server install-client``), never from the repository; a wheel built after the
set-up carries it, in the directory of the files the server hands out (``Assembly.static``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..transport.http import Response

log = logging.getLogger("echo_server.bundle")

BUNDLE_VERSION = "2.5.0"


class ClientBundle:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cache: dict[str, bytes] = {}
        self._warned = False

    def response(self, name: str, if_none_match: str | None) -> Response:
        etag = f'"{BUNDLE_VERSION}"'
        body = self._load(name)
        if body is None:
            hint = (f"{name} is not installed on this server. Install it with "
                    "`echo-server install-client` (needs npm), or install echo-server from a "
                    "wheel built by ./scripts/build-wheel after ./scripts/setup.")
            if not self._warned:
                self._warned = True
                log.warning("/socket.io/%s answers 404: %s", name, hint)
            # Said in the answer too: whoever opens the URL sees how to fix it, not a bare 404.
            return Response.text(hint + "\n", 404)
        headers = [("ETag", etag), ("Cache-Control", "public, max-age=0"),
                   ("Access-Control-Allow-Origin", "*")]
        if if_none_match == etag:
            return Response(304, b"", headers, "application/javascript")
        content_type = "application/json" if name.endswith(".map") else "application/javascript"
        return Response(200, body, headers, content_type)

    def _load(self, name: str) -> bytes | None:
        if name not in self._cache:
            path = self.directory / name
            try:
                self._cache[name] = path.read_bytes()
            except OSError:
                return None
        return self._cache[name]
