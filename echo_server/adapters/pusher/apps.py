"""The signatures a Pusher app's clients bring (the app: an ``apps.model.App`` with a
``secret``): pusher-js asks the Laravel app to sign ``socket_id:channel[:channel_data]`` with
the app secret, and the server checks it (the other way round from laravel-echo-server,
which asks the app itself)."""

from __future__ import annotations

from typing import Any, Protocol

from channel_auth import AuthRequest, AuthResult
from echo_common.jsoncodec import loads
from echo_common.signing import same_secret, sign

from ...apps.model import App
from ...core.names import USER_CHANNEL
from ...core.presence import user_key
from ...core.presence_flow import PresenceFlow


class HasApp(Protocol):
    app: App


# Soketi's refusals of a presence subscribe over the app's bounds (the status of its
# pusher:subscription_error).
MEMBER_TOO_LARGE = 4301
CHANNEL_FULL = 4100


class SignatureAuthorizer:
    """One subscribe's ``auth`` (``"<key>:<hex>"``) checked in constant time; a presence
    channel's member is the ``channel_data`` the signature covers, within its app's
    ``maxPresenceMemberSizeInKb`` and ``maxPresenceMembersPerChannel``."""

    __slots__ = ("auth", "channel_data", "connection", "presence")

    def __init__(self, connection: HasApp, auth: Any, channel_data: Any,
                 presence: PresenceFlow | None = None) -> None:
        self.connection = connection
        self.auth = auth
        self.channel_data = channel_data
        self.presence = presence  # the core's: its members (the cluster's) and seats

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
        key, _, given = self.auth.partition(":")
        text = f"{request.socket_id}:{request.channel}" + (f":{data}" if presence else "")
        # Both compared, always (a wrong key takes as long as a wrong signature); on bytes,
        # so a non-ASCII key is a wrong one and not a TypeError.
        if not (same_secret(key, self.app.key) & same_secret(given, sign(self.app.secret, text))):
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
        return await self._within_bounds(request.channel, data, member)

    async def _within_bounds(self, channel: str, data: str,
                             member: dict[str, Any]) -> AuthResult:
        limits = self.app.limits
        largest = limits.max_presence_member_bytes
        if largest and len(data.encode("utf-8", "surrogatepass")) > largest:
            return AuthResult(MEMBER_TOO_LARGE, reason=f"member over {largest} bytes "
                                                       "(maxPresenceMemberSizeInKb)")
        most = limits.max_presence_members
        presence = self.presence
        if most and presence is not None:
            # Counted where the core holds the channel: under the app's tag. The seat, held
            # across the await, makes a simultaneous join on this instance count this one;
            # released before the answer, as the core's join (which `local_users` sees)
            # follows it in the same step (``ChannelCore._authorize`` enters the member).
            # Across instances the bound holds only for joins the store shows: two
            # instances admitting the last slot at the same moment (each reading before the
            # other's write lands) both get in.
            held, user = channel + self.app.tag, user_key(member["user_id"])
            seat = presence.hold(held, user)
            try:
                present = await presence.store.members(held)
            finally:
                presence.release(held, seat)
            users = {user_key(m.user_id) for m in present} | presence.local_users(held)
            if len(users) >= most and user not in users:  # another tab of one is welcome
                return AuthResult(CHANNEL_FULL, reason=f"{most} members already "
                                                       "(maxPresenceMembersPerChannel)")
        return AuthResult(200, channel_data=member)


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
    key, _, given = auth.partition(":")
    expected = sign(app.secret, f"{socket_id}::user::{user_data}")
    if not (same_secret(key, app.key) & same_secret(given, expected)):
        return None
    try:
        user = loads(user_data)
    except ValueError:
        return None
    ident = user.get("id") if isinstance(user, dict) else None
    return str(ident) if isinstance(ident, str | int) and not isinstance(ident, bool) and \
        str(ident) else None
