"""The core's bounds on what clients may make the server hold, whatever their wire protocol.

Socket.IO today and Pusher tomorrow subscribe through the same checks: a channel name is
valid UTF-8 text of bounded length, and subscriptions are bounded per connection, per client
address and per server; client events are bounded in size and rate. Each bound hit is
reported under its kind, which ``/metrics`` counts; docs/limits.md lists the defaults.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..counts import AddressCounts
from .names import USER_CHANNEL


def _nobody(address: str) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class ChannelLimits:
    max_channel_name: int = 200
    max_subscriptions: int = 1_000_000  # in all
    max_subscriptions_per_address: int = 10_000  # 0: no bound
    max_channels: int = 10_000  # per connection
    max_pending_auth: int = 100  # authorizations in flight per connection
    whisper_max_bytes: int = 10_000
    whisper_rate: float = 10.0  # client events per second per connection; 0: no bound
    # A trusted proxy carries many clients: its address is never bounded as one client's.
    trusted: Callable[[str], bool] = _nobody


# Pusher's channel names (its SDKs' and Soketi's rule), and its users' own channels.
_PUSHER_NAME = re.compile(re.escape(USER_CHANNEL) + r"[-A-Za-z0-9_=@,.;]+|[-A-Za-z0-9_=@,.;]+")


def channel_name_problem(name: object, max_length: int, *, pusher: bool = False) -> str | None:
    """Why ``name`` cannot be a channel, or None: the one check of every name that enters,
    from a client's subscribe or an API's publish or query. Names go on to Redis keys, JSON,
    log lines and metric labels: a lone surrogate (valid in JSON's ``\\ud800``, not in
    UTF-8) would fail every one of them later, far from the client that sent it. ``pusher``:
    Pusher's own rule, ``[A-Za-z0-9_-=@,.;]`` only (``#server-to-user-`` may lead), for what
    comes in through Pusher's protocol or its HTTP API, where a control character or a space
    is no name; laravel-echo-server's clients keep the reference's names, any text."""
    if not isinstance(name, str) or not name:
        return "no channel name"
    if len(name) > max_length:
        return f"channel name of {len(name)} characters (at most {max_length})"
    if pusher:
        if _PUSHER_NAME.fullmatch(name) is None:
            return "channel name with characters other than Pusher's A-Z a-z 0-9 _-=@,.;"
        return None
    if not valid_text(name):
        return "channel name is not valid UTF-8 text"
    return None


def valid_text(value: str) -> bool:
    """``value`` encodes as UTF-8 (holds no lone surrogate)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class SubscriptionCounter:
    """Subscriptions held per client address and in all; the core asks before each new
    subscription and tells when one ends."""

    __slots__ = ("per_address", "settings", "total")

    def __init__(self, settings: ChannelLimits) -> None:
        self.settings = settings
        self.total = 0
        self.per_address = AddressCounts()

    def refusal(self, address: str) -> str | None:
        """Why one more subscription from ``address`` is refused, or None."""
        settings = self.settings
        if self.total >= settings.max_subscriptions:
            return f"the server holds {self.total} subscriptions (limits.maxSubscriptions)"
        per_address = settings.max_subscriptions_per_address
        if per_address and address and self.per_address.get(address, 0) >= per_address and \
                not settings.trusted(address):
            return (f"{address} holds {per_address} subscriptions "
                    "(limits.maxSubscriptionsPerAddress; if that is your proxy, list it in "
                    "trustedProxies)")
        return None

    def add(self, address: str) -> None:
        self.total += 1
        if address:
            self.per_address.add(address)

    def remove(self, address: str) -> None:
        self.total -= 1
        if address:
            self.per_address.remove(address)
