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

from echo_common.counts import AddressCounts

from ..apps.tags import SEPARATOR
from .names import USER_CHANNEL


def _nobody(address: str) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class ChannelLimits:
    max_channel_name: int = 200
    max_subscriptions: int = 1_000_000  # in all
    max_subscriptions_per_address: int = 10_000  # 0: no bound
    max_parked_per_address: int = 1000  # recoverable sessions held after a drop; 0: no bound
    max_channels: int = 10_000  # per connection
    max_pending_auth: int = 100  # authorizations in flight per connection
    whisper_max_bytes: int = 10_000
    whisper_rate: float = 10.0  # client events per second per connection; 0: no bound
    # A trusted proxy carries many clients: its address is never bounded as one client's.
    trusted: Callable[[str], bool] = _nobody


class ConnectionBounds:
    """An app's own bounds on each of its connections, on top of the server's
    (``ChannelLimits``): what the adapter that admitted a connection hands the core in
    ``ClientState.bounds`` (None there: the server's alone, as for the default app's
    Socket.IO clients). The core reads it at each subscribe and client event, so an adapter
    that changes it in place (its app changed) changes it for every connection holding it.
    Over one of them the answer is Soketi's, whatever the wire: a subscribe gets status
    ``TOO_MANY_CHANNELS``; a client event is dropped, and the wire that can tell its client
    why (Pusher's 4301) is given one of the ``CLIENT_EVENTS_*`` reasons."""

    __slots__ = ("client_event_rate", "client_events", "max_channels")

    def __init__(self, max_channels: int = 0, client_events: bool = True,
                 client_event_rate: float = 0.0) -> None:
        self.max_channels = max_channels  # channels one connection is in; 0: no own bound
        self.client_events = client_events  # False: none at all
        self.client_event_rate = client_event_rate  # per second per connection; 0: no bound


TOO_MANY_CHANNELS = 4300
CLIENT_EVENTS_OFF = "Client events are not enabled for this app"
CLIENT_EVENTS_OVER_RATE = "The rate limit for sending client events exceeded the quota"


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
    if SEPARATOR in name:  # what tags another app's channels (apps/tags.py)
        return "channel name with a control character \\x1f"
    return None


def event_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a published event's, or None: the core names its own presence
    changes with the tags' separator (``core.fanout.MEMBER_ADDED``), so no API and no
    broadcast source may send one as if it were the core."""
    if SEPARATOR in name:
        return "event name with a control character \\x1f"
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


# Past this share of ``max_subscriptions`` the server is under pressure: each client may hold
# a bound that shrinks with what is left, so that those holding the most are refused first and
# a client holding few still gets in until the last subscription (docs/limits.md).
PRESSURE = 0.9


class SubscriptionCounter:
    """Subscriptions held per client (``ClientState.client``: an address, an IPv6 /64) and
    in all, live or parked for a recovery; the core asks before each new subscription and
    tells when one ends."""

    __slots__ = ("_bound", "_pressure", "per_address", "settings", "total")

    def __init__(self, settings: ChannelLimits) -> None:
        self.settings = settings
        self._pressure = int(settings.max_subscriptions * PRESSURE)
        self._bound = settings.max_subscriptions_per_address  # read on every subscribe
        self.total = 0
        self.per_address = AddressCounts()

    def refusal(self, client: str, address: str) -> str | None:
        """Why one more subscription from ``client`` (at ``address``, for the trusted
        proxies) is refused, or None."""
        total = self.total
        if total < self._pressure:
            per_address = self._bound
            if not per_address or not client or self.per_address.get(client, 0) < per_address:
                return None
            if self.settings.trusted(address):
                return None
            return (f"{client} holds {per_address} subscriptions "
                    "(limits.maxSubscriptionsPerAddress; if that is your proxy, list it in "
                    "trustedProxies)")
        return self._under_pressure(client, address, total)

    def _under_pressure(self, client: str, address: str, total: int) -> str | None:
        settings = self.settings
        most = settings.max_subscriptions
        if total >= most:
            return f"the server holds {total} subscriptions (limits.maxSubscriptions)"
        if not client or settings.trusted(address):
            return None
        held = self.per_address.get(client, 0)
        share = self.share(total)
        if held < share:
            return None
        return (f"the server holds {total} of limits.maxSubscriptions ({most}) and {client} "
                f"holds {held}: clients that hold the most are refused first")

    def share(self, total: int) -> int:
        """What one client may hold while the server holds ``total``: its bound, shrinking
        in proportion to what is left once the server is past ``PRESSURE``."""
        settings = self.settings
        most = settings.max_subscriptions
        bound = settings.max_subscriptions_per_address or most
        if total < self._pressure:
            return bound
        reserve = max(1, most - self._pressure)
        return bound * max(0, most - total) // reserve

    def add(self, client: str, count: int = 1) -> None:
        self.total += count
        if client:
            self.per_address.add(client, count)

    def remove(self, client: str, count: int = 1) -> None:
        self.total -= count
        if client:
            self.per_address.remove(client, count)
