"""The server's own bounds on what clients may make it hold, whatever their wire protocol.

Socket.IO today and Pusher tomorrow subscribe through the same checks: a channel name
is valid UTF-8 text of bounded length, and subscriptions are bounded per connection (the
adapter's own count), per client address and per server. docs/limits.md lists every
bound with its default; each one hit is reported under its kind, which ``/metrics`` counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .transport.addresses import AddressCounts, TrustedProxies, parse_networks
from .transport.guard import TRANSPORT_HIGH_WATER, HttpLimits


@dataclass(frozen=True, slots=True)
class LimitSettings:
    max_channel_name: int = 200
    max_subscriptions: int = 1_000_000
    max_subscriptions_per_address: int = 10_000
    http: HttpLimits = field(default_factory=HttpLimits)
    trusted_proxies: TrustedProxies = field(default_factory=lambda: TrustedProxies(()))


def _count(section: Mapping[str, Any], key: str, default: int, *, zero_ok: bool = False) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero_ok else 1):
        least = "0 (off) or more" if zero_ok else "a positive integer"
        raise ValueError(f"limits.{key} must be {least}, not {value!r}")
    return value


def _seconds(section: Mapping[str, Any], key: str, default_ms: int) -> float:
    value = section.get(key, default_ms)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"limits.{key} must be a positive number of milliseconds")
    return float(value) / 1000.0


def parse_limits(section: Any, trusted: Any, max_body: int) -> LimitSettings:
    """From the config file's ``limits`` object and ``trustedProxies`` list."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ValueError("`limits` must be an object")
    if trusted is None:
        trusted = []
    if isinstance(trusted, str):
        trusted = [part for part in trusted.split(",") if part.strip()]
    if not isinstance(trusted, list):
        raise ValueError("`trustedProxies` must be a list of addresses or CIDR networks")
    http = HttpLimits(
        max_body=max_body,
        max_header_bytes=_count(section, "maxHeaderBytes", 64 * 1024),
        max_headers=_count(section, "maxHeaders", 100),
        header_timeout=_seconds(section, "headerTimeout", 10_000),
        body_timeout=_seconds(section, "bodyTimeout", 30_000),
        keep_alive_timeout=_seconds(section, "keepAliveTimeout", 5_000),
        max_pipeline=_count(section, "maxPipelinedRequests", 16),
        write_high_water=_count(section, "httpWriteHighWater", TRANSPORT_HIGH_WATER),
        max_connections_per_address=_count(section, "maxConnectionsPerAddress", 0,
                                           zero_ok=True),
    )
    return LimitSettings(
        max_channel_name=_count(section, "maxChannelNameLength", 200),
        max_subscriptions=_count(section, "maxSubscriptions", 1_000_000),
        max_subscriptions_per_address=_count(section, "maxSubscriptionsPerAddress", 10_000,
                                             zero_ok=True),
        http=http,
        trusted_proxies=TrustedProxies(parse_networks(trusted)),
    )


def channel_name_problem(name: object, max_length: int) -> str | None:
    """Why ``name`` cannot be a channel, or None. Names go on to Redis keys, JSON, log
    lines and metric labels: a lone surrogate (valid in JSON's ``\\ud800``, not in UTF-8)
    would fail every one of them later, far from the client that sent it."""
    if not isinstance(name, str) or not name:
        return "no channel name"
    if len(name) > max_length:
        return f"channel name of {len(name)} characters (at most {max_length})"
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
    """Subscriptions held per client address and in all; the adapter asks before each new
    subscription and tells when one ends."""

    __slots__ = ("per_address", "settings", "total")

    def __init__(self, settings: LimitSettings) -> None:
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
                not settings.trusted_proxies.trusts(address):
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
