"""Who authorizes an isolated app's private channels: its own rules, then its own Laravel
(``authHost``), always on the channel name its clients know, never the tagged one the core
holds (apps/tags.py). The default app keeps the server's chain (``server.build_authorizer``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

from channel_auth import AuthRequest, AuthResult, ChannelAuthorizer
from channel_auth.http_callback import HttpCallbackAuthorizer
from channel_auth.rules import RuleAuthorizer

from .model import App
from .tags import untagged


class UntaggedAuthorizer:
    """Hands ``inner`` the request with the channel's plain name: a signature, a rule and
    the app's /broadcasting/auth all speak of that one."""

    __slots__ = ("inner",)

    def __init__(self, inner: ChannelAuthorizer) -> None:
        self.inner = inner

    async def authorize(self, request: AuthRequest) -> AuthResult:
        return await self.inner.authorize(replace(request, channel=untagged(request.channel)))


class NoAuthHost:
    """An isolated app without ``authHost``: what its rules do not allow is refused."""

    async def authorize(self, request: AuthRequest) -> AuthResult:
        return AuthResult(403, reason="the app has no authHost")


class CallbackSettings(Protocol):
    """The server's settings of a /broadcasting/auth callback (``config.Config`` is one)."""

    @property
    def auth_verify_tls(self) -> bool: ...
    @property
    def auth_timeout(self) -> float: ...
    @property
    def auth_max_connections(self) -> int: ...
    @property
    def auth_max_connections_per_address(self) -> int: ...
    @property
    def auth_max_pending_per_address(self) -> int: ...
    @property
    def auth_queue_timeout(self) -> float: ...


def callback_settings(settings: CallbackSettings) -> dict[str, Any]:
    """``HttpCallbackAuthorizer``'s arguments from ``settings``, save where it asks: the
    default app's callback and every isolated app's are made with the same ones."""
    return {"verify_tls": settings.auth_verify_tls, "timeout": settings.auth_timeout,
            "max_connections": settings.auth_max_connections,
            "max_connections_per_client": settings.auth_max_connections_per_address,
            "max_pending_per_client": settings.auth_max_pending_per_address,
            "queue_timeout": settings.auth_queue_timeout}


def callback_grace(settings: CallbackSettings) -> float:
    """How long an authorization may take on a callback made with ``settings`` (its queue,
    then its request): one replaced is closed after this, so none in flight is cut."""
    return settings.auth_queue_timeout + settings.auth_timeout


def auth_callback(app: App, **settings: Any) -> HttpCallbackAuthorizer:
    """The app's /broadcasting/auth (it has an ``authHost``), with the server's settings of
    the callback (timeouts, bounds) as the default app's has them."""
    return HttpCallbackAuthorizer([app.auth_host], app.auth_endpoint, **settings)


def isolated_authorizer(app: App, inner: ChannelAuthorizer) -> ChannelAuthorizer:
    """An isolated app's private channels, for either protocol: its rules, then ``inner``
    (its /broadcasting/auth for Socket.IO, the signature pusher-js brings for Pusher)."""
    if app.channel_rules:
        inner = RuleAuthorizer(app.channel_rules, inner)
    return UntaggedAuthorizer(inner)
