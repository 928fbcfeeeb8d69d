"""A short-lived cache of the auth callback's answers (off by default).

Echo re-subscribes every channel on every reconnect, so a deploy or a network
blip turns into a burst of identical ``/broadcasting/auth`` calls. The key is
the request *as it would be sent*: the URL (with several ``authHost`` entries the
Referer picks one), the channel, and every header forwarded to the app under its
lower-case name (``auth.headers``, the handshake's Cookie fallback), plus the
JWT subject. Whatever the app may authenticate a user by is in the request, so
an answer given to one user is never reused for another. The socket id is left
out on purpose: what is kept (the status and presence data) never carries
anything bound to it, and a reconnect, the burst this cache is for, brings a new
one. Only definite answers (200 and 403) are kept; failures and timeouts are
always retried.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Protocol

from echo_common.jsoncodec import dumps

from .authorizer import AuthRequest, AuthResult

CACHEABLE = frozenset({200, 403})


class Outgoing(Protocol):
    """An authorizer that can say what it would send for a request."""

    async def authorize(self, request: AuthRequest) -> AuthResult: ...

    def outgoing(self, request: AuthRequest) -> tuple[str, dict[str, str]]: ...


def cache_key(request: AuthRequest, url: str, headers: dict[str, str]) -> str:
    sent = sorted((name.lower(), value) for name, value in headers.items())
    subject = (request.claims or {}).get("sub")
    material = dumps([url, request.channel, sent,
                      str(subject) if subject is not None else None])
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class CachingAuthorizer:
    def __init__(self, inner: Outgoing, ttl: float, max_entries: int = 10_000) -> None:
        self.inner = inner
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, AuthResult]] = OrderedDict()
        self.hits = 0

    async def authorize(self, request: AuthRequest) -> AuthResult:
        key = cache_key(request, *self.inner.outgoing(request))
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > now:
                self.hits += 1
                return entry[1]
            del self._entries[key]
        result = await self.inner.authorize(request)
        if result.status in CACHEABLE:
            self._entries[key] = (now + self.ttl, result)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return result

    async def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            await close()
