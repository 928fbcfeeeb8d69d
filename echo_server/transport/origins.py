"""``socketio.origins``: which browser pages may connect (the handshake's Origin, or its
Referer), in the reference's ``host:port`` form with ``*``, as full origins, or as bare hosts.
Read here, next to the engine that asks at every handshake, for both wires (Socket.IO and
Pusher)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


@dataclass(frozen=True)
class OriginPattern:
    """One allow-list entry; `None` scheme and `"*"` host or port match anything."""

    scheme: str | None
    host: str
    port: str

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        prefix = f"{self.scheme}://" if self.scheme else ""
        return f"{prefix}{host}:{self.port}"

    def matches(self, scheme: str, host: str, port: int) -> bool:
        """Whether an origin (already split and lower-cased) is allowed by this entry."""
        if self.scheme is not None and self.scheme != scheme:
            return False
        if self.port != "*" and self.port != str(port):
            return False
        if self.host == "*" or self.host == host:
            return True
        return self.host.startswith("*.") and host.endswith(self.host[1:])


def _split_host_port(netloc: str) -> tuple[str, str | None]:
    """`host:port`, `[v6]:port` or a bare host; a bare IPv6 address has no port."""
    netloc = netloc.rsplit("@", 1)[-1]
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") and rest[1:] else None
    if netloc.count(":") == 1:
        host, _, port = netloc.partition(":")
        return host, port or None
    return netloc, None


def parse_origin_pattern(entry: str) -> OriginPattern:
    """Accept the reference's `host:port` (with `*`), full origins and bare hosts (any port)."""
    scheme: str | None = None
    rest = entry.strip()
    if "://" in rest:
        scheme, _, rest = rest.partition("://")
        scheme = scheme.lower()
        rest = rest.split("/", 1)[0]
    host, port = _split_host_port(rest)
    if not host:
        raise ValueError(f"socketio.origins: no host in {entry!r}")
    if port is None:
        port = str(_DEFAULT_PORTS.get(scheme, 80)) if scheme else "*"
    elif port != "*" and not port.isdigit():
        raise ValueError(f"socketio.origins: bad port in {entry!r}")
    return OriginPattern(scheme, host.lower(), port)


def parse_origins(value: Any) -> list[OriginPattern] | None:
    """`None` means every origin is allowed (the reference's `*:*`, also when unset or empty).

    socket.io 2 takes a string or a list; people write strings separated by spaces or commas.
    """
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        entries = [part for part in re.split(r"[\s,]+", value) if part]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        entries = [item.strip() for item in value if item.strip()]
    else:
        raise ValueError("socketio.origins must be a string or a list of strings")
    if any(entry in ("*", "*:*") for entry in entries):
        return None
    return [parse_origin_pattern(entry) for entry in entries]


def split_origin(origin: str) -> tuple[str, str, int] | None:
    scheme, sep, rest = origin.strip().partition("://")
    if not sep:
        return None
    scheme = scheme.lower()
    host, port = _split_host_port(rest.split("/", 1)[0])
    if not host:
        return None
    if port is None:
        return scheme, host.lower(), _DEFAULT_PORTS.get(scheme, 80)
    return (scheme, host.lower(), int(port)) if port.isdigit() else None


def origin_allowed(patterns: list[OriginPattern] | None, origin: str | None) -> bool:
    """Check a handshake's Origin (or, lacking one, its Referer) against `socketio.origins`.

    A request without either is allowed: only browsers send them, and the allow-list is
    about browsers. (socket.io 2 would refuse such a request once an allow-list is set,
    unless it lists `*:80`.) The literal origin `null` matches only an entry `null`.
    """
    if patterns is None or origin is None or origin == "":
        return True
    parts = split_origin(origin)
    if parts is None:
        return any(pattern.host == origin.strip().lower() for pattern in patterns)
    return any(pattern.matches(*parts) for pattern in patterns)


def page_origin(value: str | None) -> str | None:
    """The origin (``scheme://host[:port]``, as sent) of a handshake's Origin or of the page
    its Referer names: what an app's exact ``allowedOrigins`` compare with."""
    if not value:
        return None
    scheme, sep, rest = value.partition("://")
    if not sep:
        return value
    for end in "/?#":
        rest = rest.partition(end)[0]
    return f"{scheme}://{rest}"
