"""An app's bounds on a presence channel (``maxPresenceMembersPerChannel``,
``maxPresenceMemberSizeInKb``), checked once, after whichever authorizer let the member in:
the app's channel rules, the signature a Pusher client brought, an isolated app's own
/broadcasting/auth. Each of those only says who the member is; a bound checked inside one of
them is skipped by the others (rules used to let any number in).

Soketi's statuses, which every protocol's refusal carries (Pusher's
``pusher:subscription_error``, Echo's error callback on Socket.IO).
"""

from __future__ import annotations

from collections.abc import Callable

from channel_auth import AuthRequest, AuthResult, ChannelAuthorizer
from echo_common.jsoncodec import dumps

from ..apps.model import AppLimits
from ..core.names import is_presence
from ..core.presence import user_key
from ..core.presence_flow import PresenceFlow

MEMBER_TOO_LARGE = 4301
CHANNEL_FULL = 4100


class PresenceBounds:
    """``inner``, then its member within the bounds ``limits`` gives when the check runs (a
    connection's app as a reload left it). Outermost: the channel is the one the core holds
    (an isolated app's tagged, as its members are stored)."""

    __slots__ = ("inner", "limits", "presence")

    def __init__(self, inner: ChannelAuthorizer, limits: Callable[[], AppLimits],
                 presence: PresenceFlow) -> None:
        self.inner = inner
        self.limits = limits
        self.presence = presence  # the core's: its members (the cluster's) and seats

    async def authorize(self, request: AuthRequest) -> AuthResult:
        result = await self.inner.authorize(request)
        member = result.channel_data
        if not result.allowed or member is None or not is_presence(request.channel):
            return result
        limits = self.limits()
        largest = limits.max_presence_member_bytes
        if largest and len(dumps(member).encode("utf-8", "surrogatepass")) > largest:
            return AuthResult(MEMBER_TOO_LARGE, reason=f"member over {largest} bytes "
                                                       "(maxPresenceMemberSizeInKb)")
        most = limits.max_presence_members
        if not most or member.get("user_id") is None:  # no member: the core lets none in
            return result
        # Across instances the bound holds only for joins the store shows: two instances
        # admitting the last slot at the same moment (each reading before the other's write
        # lands) both get in.
        user = user_key(member["user_id"])
        users = await self.presence.users(request.channel, user)
        if len(users) >= most and user not in users:  # another tab of one is welcome
            return AuthResult(CHANNEL_FULL, reason=f"{most} members already "
                                                   "(maxPresenceMembersPerChannel)")
        return result


def as_they_are(limits: AppLimits) -> Callable[[], AppLimits]:
    """Bounds that do not follow reloads (a reload builds the authorizer again)."""
    return lambda: limits
