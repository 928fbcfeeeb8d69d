"""Reverb's ``.env``: ``REVERB_APP_ID``, ``REVERB_APP_KEY`` and ``REVERB_APP_SECRET`` are the
app ``php artisan reverb:start`` served, so an app moves to echo-server by running it with
that ``.env``, changing neither ``config/reverb.php`` nor the frontend."""

from __future__ import annotations

from collections.abc import Mapping

from .model import App, parse_app


def reverb_app(environ: Mapping[str, str]) -> App | None:
    """The app, read as a ``clients`` entry of the default app; None without both a key and
    a secret."""
    key, secret = environ.get("REVERB_APP_KEY"), environ.get("REVERB_APP_SECRET")
    if not key or not secret:
        return None
    entry = {"appId": environ.get("REVERB_APP_ID") or "reverb", "key": key, "secret": secret}
    return parse_app(entry, "REVERB_APP_*", legacy=True)


def reverb_listen_address(environ: Mapping[str, str]) -> tuple[str | None, str]:
    """Where Reverb listened (``REVERB_SERVER_HOST``, ``REVERB_SERVER_PORT``, default 8080),
    which the frontend's ``VITE_REVERB_PORT`` points at: the port as written, for the
    config's port parser."""
    return environ.get("REVERB_SERVER_HOST") or None, environ.get("REVERB_SERVER_PORT") or "8080"
