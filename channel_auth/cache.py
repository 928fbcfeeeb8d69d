"""A short-lived cache of the auth callback's answers (off by default).

Echo re-subscribes every channel on every reconnect, so a deploy or a network
blip turns into a burst of identical ``/broadcasting/auth`` calls. The key is
the channel *and* every credential that reaches the backend (forwarded
headers, the Cookie fallback, the JWT subject), never the channel alone, so an
answer given to one user is never reused for another. Only definite answers
(200 and 403) are kept; failures and timeouts are always retried.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

from broadcaster.jsoncodec import dumps

from .authorizer import AuthRequest, AuthResult, ChannelAuthorizer

CACHEABLE = frozenset({200, 403})


def cache_key(request: AuthRequest) -> str:
    cookie = request.headers.get("Cookie") or request.handshake_headers.get("cookie") or ""
    subject = (request.claims or {}).get("sub")
    material = dumps([request.channel, sorted(request.headers.items()), cookie,
                      str(subject) if subject is not None else None])
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class CachingAuthorizer:
    def __init__(self, inner: ChannelAuthorizer, ttl: float, max_entries: int = 10_000) -> None:
        self.inner = inner
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, AuthResult]] = OrderedDict()
        self.hits = 0

    async def authorize(self, request: AuthRequest) -> AuthResult:
        key = cache_key(request)
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
