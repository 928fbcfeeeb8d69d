"""The one way this project makes an outgoing HTTP client.

A server that calls out on behalf of many clients must carry nothing from one call to the
next. aiohttp's default ``ClientSession`` keeps a cookie jar: every ``Set-Cookie`` an auth
host answers (Laravel's ``web`` middleware always sets ``laravel_session``) would be sent
on every later request to that host, replacing the next client's own cookie of the same
name, so one user's session would authorise everybody. The jar skips IP hosts, which is why
it hid from every test that called ``127.0.0.1``. Here the jar is aiohttp's
``DummyCookieJar``, and no default headers or auth exist to carry anything else.
"""

from __future__ import annotations

from typing import Any

import aiohttp


def outgoing_session(*, timeout: float | None = None,
                     connector: aiohttp.BaseConnector | None = None,
                     **options: Any) -> aiohttp.ClientSession:
    """A pooled client that keeps no cookies and no per-request state. ``timeout`` is the
    whole request's, in seconds (None: aiohttp's default)."""
    for shared in ("cookie_jar", "cookies", "headers", "auth"):
        if shared in options:
            raise TypeError(f"{shared} would be shared by every request of this client")
    if timeout is not None:
        options["timeout"] = aiohttp.ClientTimeout(total=timeout)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                 **options)
