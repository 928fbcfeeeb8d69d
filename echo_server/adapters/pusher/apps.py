"""The signatures a Pusher app's clients bring (the app: an ``apps.model.App`` with a
``secret``): pusher-js asks the Laravel app to sign ``socket_id:channel[:channel_data]`` with
the app secret, and the server checks it (the other way round from laravel-echo-server,
which asks the app itself)."""

from __future__ import annotations

from typing import Any, Protocol

from channel_auth import AuthRequest, AuthResult
from echo_common.jsoncodec import loads
from echo_common.signing import same_secret, verify

from ...apps.model import App
from ...core.names import USER_CHANNEL


class HasApp(Protocol):
    app: App


class SignatureAuthorizer:
    """One subscribe's ``auth`` (``"<key>:<hex>"``) checked in constant time; a presence
    channel's member is the ``channel_data`` the signature covers (its app's bounds on it
    are ``presence_bounds``', whoever decided)."""

    __slots__ = ("auth", "channel_data", "connection")

    def __init__(self, connection: HasApp, auth: Any, channel_data: Any) -> None:
        self.connection = connection
        self.auth = auth
        self.channel_data = channel_data

    @property
    def app(self) -> App:
        """The connection's app when the check runs, a reload's if one came in between."""
        return self.connection.app

    async def authorize(self, request: AuthRequest) -> AuthResult:
        presence = request.channel.startswith("presence-")
        data = self.channel_data if isinstance(self.channel_data, str) else None
        if not isinstance(self.auth, str) or (presence and data is None):
            return AuthResult(401, reason="no signature" if presence or not self.auth
                              else "bad auth")
        text = f"{request.socket_id}:{request.channel}" + (f":{data}" if presence else "")
        if not _signed(self.app, self.auth, text):
            return AuthResult(401, reason="invalid signature")
        if not presence:
            return AuthResult(200)
        assert data is not None  # a presence channel without channel_data is refused above
        try:
            member = loads(data)
        except ValueError:
            return AuthResult(400, reason="channel_data is not JSON")
        if not isinstance(member, dict) or member.get("user_id") is None:
            return AuthResult(400, reason="channel_data has no user_id")
        return AuthResult(200, channel_data=member)


def _signed(app: App, auth: str, text: str) -> bool:
    """Whether ``auth`` (``"<key>:<hex>"``) is ``app``'s key and its signature of ``text``.
    Both compared, always (a wrong key takes as long as a wrong signature); on bytes, so a
    non-ASCII key is a wrong one and not a TypeError."""
    key, _, given = auth.partition(":")
    return same_secret(key, app.key) & verify(app.secret, text, given)


class UserChannelAuthorizer:
    """``#server-to-user-<id>``: only a connection signed in as that user."""

    __slots__ = ("user",)

    def __init__(self, user: str | None) -> None:
        self.user = user

    async def authorize(self, request: AuthRequest) -> AuthResult:
        if self.user is not None and request.channel == USER_CHANNEL + self.user:
            return AuthResult(200)
        return AuthResult(403, reason="not signed in as that user")


def signed_in_user(app: App, socket_id: str, auth: Any, user_data: Any) -> str | None:
    """The user id ``pusher:signin`` proves (``socket_id::user::user_data`` signed by the
    app), or None."""
    if not (isinstance(auth, str) and isinstance(user_data, str)):
        return None
    if not _signed(app, auth, f"{socket_id}::user::{user_data}"):
        return None
    try:
        user = loads(user_data)
    except ValueError:
        return None
    ident = user.get("id") if isinstance(user, dict) else None
    return str(ident) if isinstance(ident, str | int) and not isinstance(ident, bool) and \
        str(ident) else None
