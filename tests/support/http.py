"""The tests' own HTTP clients keep no cookies either.

A test client with aiohttp's default jar would send back whatever the server set (the EIO3
``io`` cookie, a session), so a test could pass on a cookie it never meant to send, as the
server's auth callback once did (issue 20). A test that wants a cookie sends it itself."""

from __future__ import annotations

from typing import Any

import aiohttp


def http_client(**options: Any) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), **options)
