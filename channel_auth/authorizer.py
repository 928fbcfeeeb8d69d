"""The authorization hook for private and presence channels.

Kept apart from the transport on purpose: it sees a channel name, the
credentials a client forwarded and the claims of its handshake, and answers
with an HTTP-like status (200 allows; anything else is what the client gets in
``subscription_error``), plus presence data when there is some.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class AuthRequest:
    channel: str
    socket_id: str
    # ``auth.headers`` from the client's subscribe payload, as given.
    headers: dict[str, str] = field(default_factory=dict)
    # The Socket.IO handshake's headers (cookie, referer, ...), lower-case names.
    handshake_headers: dict[str, str] = field(default_factory=dict)
    claims: dict[str, Any] | None = None
    # Whose request this is (the client's address), for a fair share of the auth host:
    # requests with one ``who`` share one client's bounds. None: a client of its own.
    who: str | None = None


@dataclass(slots=True)
class AuthResult:
    status: int
    channel_data: dict[str, Any] | None = None
    reason: str | None = None  # why it failed, for the log (never sent to the client)

    @property
    def allowed(self) -> bool:
        return self.status == 200


class ChannelAuthorizer(Protocol):
    async def authorize(self, request: AuthRequest) -> AuthResult: ...
