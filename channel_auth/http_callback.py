"""Authorization through the Laravel app's ``/broadcasting/auth``.

The request is the one laravel-echo-server sends (form ``channel_name``, the
client's ``auth.headers`` as given, the handshake Cookie as a fallback,
``X-Requested-With`` so Laravel answers JSON instead of redirecting), plus
``socket_id``, which Pusher-style responses need. Unlike the reference, TLS
certificates are verified (``authVerifyTls: false`` opts out), requests time
out, connections are pooled, and redirects still count as a refusal.

The pool is shared fairly between clients (``channel_auth.fair``): a request waits for
its turn first, and its timeout starts only when it has a connection, so time spent
behind other clients' requests is never taken for a slow answer. A client with too many
requests in flight or waiting gets 429 at once, a request that finds no connection in
time gets 503: neither reaches the app, and neither looks like its answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from typing import Any
from urllib.parse import urlsplit

from echo_common.jsoncodec import loads

from .authorizer import AuthRequest, AuthResult
from .fair import FairSlots, NoSlotInTime, TooManyPending

log = logging.getLogger("channel_auth.http")

# The pool's bounds, and how long a request may wait and take (seconds), unless configured
# (``channel_auth.settings``: authMaxConnections, authMaxConnectionsPerAddress,
# authMaxPendingPerAddress, authQueueTimeout, authTimeout).
MAX_CONNECTIONS = 100
MAX_CONNECTIONS_PER_CLIENT = 25
MAX_PENDING_PER_CLIENT = 1000
QUEUE_TIMEOUT = 10.0
TIMEOUT = 10.0

# ``auth.headers`` names a client may not choose: they frame or route the request, and the
# body is our form. A forged Content-Length or Transfer-Encoding would desynchronise the
# pooled keep-alive connection, so the next user's auth request on it would be parsed after
# the attacker's bytes. The reference forwards them (with a fresh connection per request).
_NOT_FORWARDED = frozenset({
    "host", "content-length", "content-type", "transfer-encoding", "connection", "keep-alive",
    "proxy-connection", "upgrade", "te", "trailer", "expect", "x-requested-with",
})


def choose_auth_host(auth_hosts: list[str], referer: str | None) -> str:
    """The reference's rule: with a Referer matching an entry (origin, host, or
    the hostname from its first dot), the Referer's origin; with a Referer
    matching none, the *last* entry; without a Referer, the first."""
    selected = auth_hosts[0] if auth_hosts else "http://localhost"
    if not referer:
        return selected
    parts = urlsplit(referer)
    origin = f"{parts.scheme}:{'//' if parts.netloc else ''}{parts.netloc}"
    hostname = parts.hostname or ""
    from_dot = hostname[hostname.find("."):] if "." in hostname else hostname[-1:]
    for host in auth_hosts:
        selected = host
        if (hostname and from_dot == host) or origin == host or parts.netloc == host:
            return origin
    return selected


def parse_channel_data(body: Any) -> dict[str, Any] | None:
    """``channel_data`` as an object or as a JSON string (Pusher style)."""
    if not isinstance(body, dict):
        return None
    data = body.get("channel_data")
    if isinstance(data, str):
        try:
            data = loads(data)
        except ValueError:
            return None
    return data if isinstance(data, dict) else None


class HttpCallbackAuthorizer:
    def __init__(self, auth_hosts: list[str], auth_endpoint: str, *, verify_tls: bool = True,
                 timeout: float = TIMEOUT, max_connections: int = MAX_CONNECTIONS,
                 max_connections_per_client: int = MAX_CONNECTIONS_PER_CLIENT,
                 max_pending_per_client: int = MAX_PENDING_PER_CLIENT,
                 queue_timeout: float = QUEUE_TIMEOUT) -> None:
        self.auth_hosts = auth_hosts
        self.auth_endpoint = auth_endpoint
        self.verify_tls = verify_tls
        self.timeout = timeout
        self.slots = FairSlots(max_connections, per_client=max_connections_per_client,
                               max_pending=max_pending_per_client, wait_timeout=queue_timeout)
        self._session: Any = None
        self._lock = asyncio.Lock()
        if not verify_tls:
            log.warning("authVerifyTls is false: TLS certificates of the auth host are not "
                        "checked (the reference never checks them); use it only for testing")

    async def _client(self) -> Any:
        if self._session is None:
            async with self._lock:
                if self._session is None:
                    import aiohttp

                    from echo_common.http_client import outgoing_session

                    # No limit of aiohttp's own: the fair slots are the bound, and a
                    # queue inside aiohttp would count against the request's timeout.
                    connector = aiohttp.TCPConnector(limit=0, ssl=self.verify_tls)
                    self._session = outgoing_session(connector=connector,
                                                     timeout=self.timeout)
        return self._session

    def headers_for(self, request: AuthRequest) -> dict[str, str]:
        """Names compared case-insensitively: a client's ``cookie`` is its Cookie, and is
        not sent alongside (or replaced by) the handshake's."""
        headers = {name: value for name, value in request.headers.items()
                   if name.lower() not in _NOT_FORWARDED}
        if not any(name.lower() == "cookie" and value for name, value in headers.items()):
            headers = {name: value for name, value in headers.items()
                       if name.lower() != "cookie"}
            cookie = request.handshake_headers.get("cookie")
            if cookie:
                headers["Cookie"] = cookie
        headers["X-Requested-With"] = "XMLHttpRequest"
        return headers

    def url_for(self, request: AuthRequest) -> str:
        host = choose_auth_host(self.auth_hosts, request.handshake_headers.get("referer"))
        return host + self.auth_endpoint

    def outgoing(self, request: AuthRequest) -> tuple[str, dict[str, str]]:
        """Where the request goes and the headers it carries: all the app can know the
        user by, so also what an answer may be cached under (``channel_auth.cache``)."""
        return self.url_for(request), self.headers_for(request)

    async def authorize(self, request: AuthRequest) -> AuthResult:
        # Without a ``who`` a request is a client of its own: bounded by the pool alone.
        who: Hashable = request.who if request.who is not None else object()
        try:
            async with self.slots.slot(who):
                return await self._post(request)
        except TooManyPending as exc:
            return AuthResult(429, reason=str(exc))
        except NoSlotInTime as exc:
            return AuthResult(503, reason=str(exc))

    async def _post(self, request: AuthRequest) -> AuthResult:
        import aiohttp

        session = await self._client()
        form = {"channel_name": request.channel, "socket_id": request.socket_id}
        url, headers = self.outgoing(request)
        try:
            async with session.post(url, data=form, headers=headers,
                                    allow_redirects=False) as response:
                body_bytes = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            # Logged (rate-limited) by the caller, which counts every failure. ValueError:
            # a header aiohttp refuses to send (a CR/LF in a client's auth.headers value).
            return AuthResult(0, reason=type(exc).__name__ + (f": {exc}" if str(exc) else ""))
        if status != 200:
            return AuthResult(status)
        try:
            body = loads(body_bytes)
        except (ValueError, UnicodeDecodeError):
            body = None  # any 200 authorizes, an HTML page too (as the reference)
        return AuthResult(200, parse_channel_data(body))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
