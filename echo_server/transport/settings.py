"""The transport's part of ``laravel-echo-server.json``: the engine options socket.io reads
from the ``socketio`` object (under socket.io's names, so a file using them still starts the
reference), the HTTP bounds of the ``limits`` object, and ``trustedProxies``.

Defaults are the transport's own (``EngineOptions``, ``HttpLimits``): each is written once,
where it is enforced, and the file's default is read from there.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from echo_common.values import (
    count,
    js_truthy,
    milliseconds,
    positive_int,
    positive_seconds,
    section,
)

from .addresses import TrustedProxies, parse_networks
from .engine import EngineOptions
from .guard import BODY_ALLOWANCE, HttpLimits
from .origins import OriginPattern, origin_allowed, parse_origins

_ENGINE = EngineOptions()
_HTTP = HttpLimits()

# socket.io's own names, in its units (ms), for the engine's defaults.
ENGINE_DEFAULTS: dict[str, Any] = {
    "path": "/socket.io",
    "pingInterval": _ENGINE.ping_interval * 1000,
    "pingTimeout": _ENGINE.ping_timeout * 1000,
    "upgradeTimeout": _ENGINE.upgrade_timeout * 1000,
    "connectTimeout": _ENGINE.connect_timeout * 1000,
    "maxHttpBufferSize": _ENGINE.max_payload,
    "transports": list(_ENGINE.transports),
    "cookie": "io",
    "allowUpgrades": _ENGINE.allow_upgrades,
    "writeBufferHighWater": _ENGINE.write_high_water,
}
KNOWN_TRANSPORTS = ("polling", "websocket")


class EngineSettings:
    """The ``socketio`` object's engine options, as properties of ``Config``."""

    raw: dict[str, Any]

    @property
    def socketio(self) -> dict[str, Any]:
        return section(self.raw, "socketio")

    def _engine_option(self, key: str) -> Any:
        value = self.socketio.get(key)
        return ENGINE_DEFAULTS[key] if value is None else value

    @property
    def socketio_path(self) -> str:
        return "/" + str(self._engine_option("path")).strip("/")

    @property
    def ping_interval(self) -> float:
        return milliseconds(self._engine_option("pingInterval"), "socketio.pingInterval")

    @property
    def ping_timeout(self) -> float:
        return milliseconds(self._engine_option("pingTimeout"), "socketio.pingTimeout")

    @property
    def upgrade_timeout(self) -> float:
        return milliseconds(self._engine_option("upgradeTimeout"), "socketio.upgradeTimeout")

    @property
    def handshake_timeout(self) -> float:
        """How long a client may take to join the namespace (socket.io 4's `connectTimeout`)."""
        return milliseconds(self._engine_option("connectTimeout"), "socketio.connectTimeout")

    @property
    def max_http_buffer_size(self) -> int:
        return positive_int(self._engine_option("maxHttpBufferSize"),
                            "socketio.maxHttpBufferSize")

    @property
    def write_buffer_high_water(self) -> int:
        """Our own: bytes queued for one slow client before it is dropped."""
        return positive_int(self._engine_option("writeBufferHighWater"),
                            "socketio.writeBufferHighWater")

    @property
    def transports(self) -> list[str]:
        value = self._engine_option("transports")
        items = [value] if isinstance(value, str) else list(value)
        unknown = [item for item in items if item not in KNOWN_TRANSPORTS]
        if unknown or not items:
            raise ValueError(
                f"socketio.transports: expected polling and/or websocket, got {value!r}"
            )
        return items

    @property
    def allow_upgrades(self) -> bool:
        return js_truthy(self._engine_option("allowUpgrades"))

    @property
    def cookie_name(self) -> str | None:
        """engine.io's `cookie` option: a name, or false for no cookie."""
        value = self._engine_option("cookie")
        if isinstance(value, dict):
            return str(value.get("name") or "io")
        return str(value) if js_truthy(value) else None

    @cached_property
    def _origin_patterns(self) -> list[OriginPattern] | None:
        return parse_origins(self.socketio.get("origins"))

    @property
    def allowed_origins(self) -> list[str] | None:
        """`None` allows every origin, as the reference's default `*:*` does."""
        patterns = self._origin_patterns
        return None if patterns is None else [str(pattern) for pattern in patterns]

    def origin_allowed(self, origin: str | None) -> bool:
        """Whether a handshake's Origin (or Referer) is allowed (``origins.origin_allowed``)."""
        return origin_allowed(self._origin_patterns, origin)

    @property
    def engine_options(self) -> EngineOptions:
        """The engine's, as the ``socketio`` object sets them."""
        return EngineOptions(
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            upgrade_timeout=self.upgrade_timeout,
            connect_timeout=self.handshake_timeout,
            max_payload=self.max_http_buffer_size,
            transports=tuple(self.transports),
            allow_upgrades=self.allow_upgrades,
            write_high_water=self.write_buffer_high_water,
            cookie=self.cookie_name is not None,
            origin_allowed=self.origin_allowed,
        )


def parse_http_limits(limits: dict[str, Any], max_payload: int) -> HttpLimits:
    """The HTTP side's bounds from the ``limits`` object (docs/limits.md); a request body may
    carry the largest message plus its framing."""

    def counted(key: str, default: int, *, zero_ok: bool = False) -> int:
        return count(limits, key, default, f"limits.{key}", zero_ok=zero_ok)

    def seconds(key: str, default: float) -> float:
        return positive_seconds(limits, key, default, f"limits.{key}")

    return HttpLimits(
        max_body=max_payload + BODY_ALLOWANCE,
        max_header_bytes=counted("maxHeaderBytes", _HTTP.max_header_bytes),
        max_headers=counted("maxHeaders", _HTTP.max_headers),
        header_timeout=seconds("headerTimeout", _HTTP.header_timeout),
        body_timeout=seconds("bodyTimeout", _HTTP.body_timeout),
        keep_alive_timeout=seconds("keepAliveTimeout", _HTTP.keep_alive_timeout),
        max_pipeline=counted("maxPipelinedRequests", _HTTP.max_pipeline),
        write_high_water=counted("httpWriteHighWater", _HTTP.write_high_water),
        max_connections_per_address=counted("maxConnectionsPerAddress",
                                            _HTTP.max_connections_per_address, zero_ok=True),
        linger_timeout=seconds("lingerTimeout", _HTTP.linger_timeout),
        linger_bytes=counted("lingerMaxBytes", _HTTP.linger_bytes),
    )


def trusted_proxy_entries(value: Any) -> list[Any]:
    """``trustedProxies``: a list of addresses or CIDR networks (or a comma-separated string),
    checked for its shape; ``trusted_proxies`` reads the entries."""
    if value is None:
        value = []
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list):
        raise ValueError("`trustedProxies` must be a list of addresses or CIDR networks")
    return value


def trusted_proxies(entries: list[Any]) -> TrustedProxies:
    return TrustedProxies(parse_networks(entries))
