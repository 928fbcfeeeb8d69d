"""The callback's part of ``laravel-echo-server.json``: ``authEndpoint`` and our own bounds on
the requests to ``authHost`` (``authTimeout``, ``authMaxConnections``…, ms in the file like
socket.io's timeouts), the answer cache (``authCacheTtl``), and the local channel rules
(``channels``) that decide before it. The defaults are the callback's own
(``http_callback``). ``authHost`` itself falls back to the server's ``host``,
so the server's ``Config`` reads it."""

from __future__ import annotations

from typing import Any

from echo_common.values import milliseconds, positive_int

from . import http_callback as callback
from .rules import ChannelRule, parse_rules


class AuthSettings:
    """The callback's options, as properties of the server's ``Config``."""

    raw: dict[str, Any]

    @property
    def auth_endpoint(self) -> str:
        return str(self.raw.get("authEndpoint") or "/broadcasting/auth")

    @property
    def auth_verify_tls(self) -> bool:
        """Ours: the reference never verifies the auth host's certificate; we do unless told."""
        value = self.raw.get("authVerifyTls", True)
        return value not in (False, "false", "0", 0)

    @property
    def auth_cache_ttl(self) -> float:
        """Ours: seconds to reuse an auth answer for the same credentials; 0 (off) by default."""
        return milliseconds(self.raw.get("authCacheTtl", 0), "authCacheTtl")

    @property
    def auth_timeout(self) -> float:
        """Ours: the reference waits forever. It starts when the request has a connection,
        not while it waits for one."""
        return milliseconds(self.raw.get("authTimeout", callback.TIMEOUT * 1000), "authTimeout")

    @property
    def auth_max_connections(self) -> int:
        """Ours: requests to `authHost` in flight at once, all clients together."""
        value = self.raw.get("authMaxConnections", callback.MAX_CONNECTIONS)
        return positive_int(value, "authMaxConnections")

    @property
    def auth_max_connections_per_address(self) -> int:
        """Ours: how many of those one client address may hold; its further requests wait
        for their turn, which comes round-robin between the addresses waiting."""
        value = self.raw.get("authMaxConnectionsPerAddress", callback.MAX_CONNECTIONS_PER_CLIENT)
        return positive_int(value, "authMaxConnectionsPerAddress")

    @property
    def auth_max_pending_per_address(self) -> int:
        """Ours: requests of one client address in flight or waiting; beyond, the subscribe
        is refused with 429 without asking `authHost`."""
        value = self.raw.get("authMaxPendingPerAddress", callback.MAX_PENDING_PER_CLIENT)
        return positive_int(value, "authMaxPendingPerAddress")

    @property
    def auth_queue_timeout(self) -> float:
        """Ours (ms): how long a request may wait for a connection; then it fails with 503,
        never mistaken for the app's slow answer (0)."""
        return milliseconds(self.raw.get("authQueueTimeout", callback.QUEUE_TIMEOUT * 1000),
                            "authQueueTimeout")

    @property
    def channel_rules(self) -> list[ChannelRule]:
        """Ours: `channels`, the rules that decide for JWT (and signed-in Pusher) users before
        the callback; raises ``RuleConfigError`` for a malformed one."""
        return parse_rules(self.raw.get("channels"))
