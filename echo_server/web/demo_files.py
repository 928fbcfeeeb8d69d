"""``/demo/``: the built demo page, served as files (the demo's backend and the server it
starts are ``echo_server.demo``'s business)."""

from __future__ import annotations

import logging
import mimetypes
from pathlib import Path

from ..transport.http import Request, Response
from . import static_dir

log = logging.getLogger("echo_server.demo")

DEMO_DIR = (static_dir() / "demo").resolve()
BUILD_HINT = ("./scripts/setup in a source checkout of echo-server (needs npm: it runs "
              "npm ci --prefix clients/js && npm run build --prefix clients/js), then "
              "./scripts/build-wheel to carry it in a wheel")

_TYPES = {".js": "application/javascript", ".mjs": "application/javascript",
          ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8",
          ".json": "application/json", ".map": "application/json", ".svg": "image/svg+xml",
          ".ico": "image/x-icon", ".png": "image/png", ".woff2": "font/woff2"}


class DemoFiles:
    """The built demo under ``/demo/``: files only, never outside its directory.

    Vite names assets by content hash, so they may be cached for good; ``index.html`` is
    revalidated so a rebuild shows at once. Until the page is built every ``/demo`` URL is a
    404 and the log says (once) how to build it.
    """

    PREFIX = "/demo"

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = (directory or DEMO_DIR).resolve()
        self._warned = False

    @classmethod
    def matches(cls, path: str) -> bool:
        return path == cls.PREFIX or path.startswith(cls.PREFIX + "/")

    def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response.text("Method Not Allowed", 405, headers=[("Allow", "GET, HEAD")])
        if request.path == self.PREFIX:  # relative URLs need the slash
            query = f"?{request.query_string}" if request.query_string else ""
            target = f"{self.PREFIX}/{query}"
            return Response.text("", 301, headers=[("Location", target)])
        relative = request.path[len(self.PREFIX) + 1:] or "index.html"
        path = self._resolve(relative)
        if path is None:
            if not (self.directory / "index.html").is_file() and not self._warned:
                self._warned = True
                log.warning("the demo page is not built (%s has no index.html), so /demo "
                            "answers 404. Build it with: %s", self.directory, BUILD_HINT)
            return Response.text("Not Found", 404)
        try:
            body = path.read_bytes()
        except OSError:
            return Response.text("Not Found", 404)
        immutable = relative.startswith("assets/")
        headers = [("Cache-Control", "public, max-age=31536000, immutable" if immutable
                    else "no-cache"), ("X-Content-Type-Options", "nosniff")]
        content_type = (_TYPES.get(path.suffix.lower())
                        or mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        return Response(200, b"" if request.method == "HEAD" else body, headers, content_type)

    def _resolve(self, relative: str) -> Path | None:
        parts = relative.split("/")
        if any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
            return None
        candidate = self.directory.joinpath(*parts)
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError):
            return None
        if not resolved.is_relative_to(self.directory) or not resolved.is_file():
            return None
        return resolved


# --------------------------------------------------------------------------- the data
