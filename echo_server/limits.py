"""The ``limits`` object and ``trustedProxies`` of the config file, read into the settings
of the layers that enforce them: the HTTP side's (``transport.guard.HttpLimits``) and the
channel core's (``core.limits``). docs/limits.md lists every bound with its default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .transport.addresses import TrustedProxies, parse_networks
from .transport.guard import TRANSPORT_HIGH_WATER, HttpLimits


@dataclass(frozen=True, slots=True)
class LimitSettings:
    max_channel_name: int = 200
    max_subscriptions: int = 1_000_000
    max_subscriptions_per_address: int = 10_000
    max_parked_sessions_per_address: int = 1000
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
        linger_timeout=_seconds(section, "lingerTimeout", 5_000),
        linger_bytes=_count(section, "lingerMaxBytes", 16 * 1024 * 1024),
    )
    return LimitSettings(
        max_channel_name=_count(section, "maxChannelNameLength", 200),
        max_subscriptions=_count(section, "maxSubscriptions", 1_000_000),
        max_subscriptions_per_address=_count(section, "maxSubscriptionsPerAddress", 10_000,
                                             zero_ok=True),
        max_parked_sessions_per_address=_count(section, "maxParkedSessionsPerAddress", 1000,
                                               zero_ok=True),
        http=http,
        trusted_proxies=TrustedProxies(parse_networks(trusted)),
    )
