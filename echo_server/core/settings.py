"""The channel core's part of ``laravel-echo-server.json``: its bounds (in the ``socketio``
object, beside socket.io's own options, and in the ``limits`` object), the presence grace,
connection-state recovery with its history, and the cluster.

Defaults are the core's own (``ChannelLimits``, ``RecoveryOptions``, ``HistoryLimits``):
each is written once, where it is enforced, and the file's default is read from there.
"""

from __future__ import annotations

import math
from typing import Any

from echo_common.values import count, milliseconds, positive_int, section

from .history import HistoryLimits
from .limits import ChannelLimits
from .recovery import RecoveryOptions

_CHANNELS = ChannelLimits()
_RECOVERY = RecoveryOptions()

# Our own keys of the ``socketio`` object, in its units (ms), for the core's defaults.
CHANNEL_DEFAULTS: dict[str, Any] = {
    "maxChannelsPerSocket": _CHANNELS.max_channels,
    "maxPendingAuthPerSocket": _CHANNELS.max_pending_auth,
    "whisperMaxBytes": _CHANNELS.whisper_max_bytes,
    "whisperRate": _CHANNELS.whisper_rate,
    "presenceGraceMs": _RECOVERY.presence_grace * 1000,
}
# socket.io's own option (off unless the file has it: it changes the wire for Engine.IO 4
# clients); our history bounds sit next to its window.
RECOVERY_DEFAULTS: dict[str, Any] = {
    "maxDisconnectionDuration": _RECOVERY.window * 1000,
    "maxPacketsPerChannel": _RECOVERY.history.max_per_channel,
    "maxBytes": _RECOVERY.history.max_bytes,
    # Recovery on another instance: how long a reconnect may wait for that instance's stream
    # delivery to reach the client's place (a restarted instance reads its backlog first).
    "catchUpMs": _RECOVERY.catch_up * 1000,
}


class ChannelSettings:
    """The core's options, as properties of ``Config``."""

    raw: dict[str, Any]

    def _channel_option(self, key: str) -> Any:
        value = section(self.raw, "socketio").get(key)
        return CHANNEL_DEFAULTS[key] if value is None else value

    @property
    def max_channels_per_socket(self) -> int:
        """Our own: channels one connection may be in or asking for (the reference has no
        bound: one client could grow the server's memory without end)."""
        return positive_int(self._channel_option("maxChannelsPerSocket"),
                            "socketio.maxChannelsPerSocket")

    @property
    def max_pending_auth_per_socket(self) -> int:
        """Our own: authorization requests of one connection in flight at once; each is a
        request to `authHost`, so one client cannot make the server flood the app."""
        return positive_int(self._channel_option("maxPendingAuthPerSocket"),
                            "socketio.maxPendingAuthPerSocket")

    @property
    def whisper_max_bytes(self) -> int:
        """Our own: the largest client event (whisper) relayed, in bytes of JSON."""
        return positive_int(self._channel_option("whisperMaxBytes"), "socketio.whisperMaxBytes")

    @property
    def whisper_rate(self) -> float:
        """Our own: client events per second per connection (bursts of the same size); 0
        lifts the bound."""
        value = self._channel_option("whisperRate")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("socketio.whisperRate must be a number of events per second")
        if not math.isfinite(value) or value < 0:
            raise ValueError("socketio.whisperRate must be a non-negative number")
        return float(value)

    @property
    def presence_grace(self) -> float:
        """Our own: how long a presence member whose connection dropped (not closed by its
        client) stays, so a reload or a short drop announces neither leaving nor joining."""
        return milliseconds(self._channel_option("presenceGraceMs"), "socketio.presenceGraceMs")

    @property
    def recovery(self) -> RecoveryOptions | None:
        """``socketio.connectionStateRecovery`` (socket.io's name and window): None when
        off. ``true`` or ``{}`` turn it on with the defaults."""
        value = section(self.raw, "socketio").get("connectionStateRecovery")
        if value is None or value is False:
            return None
        if value is True:
            value = {}
        if not isinstance(value, dict):
            raise ValueError("socketio.connectionStateRecovery must be an object (or true)")
        unknown = sorted(set(value) - set(RECOVERY_DEFAULTS) - {"skipMiddlewares"})
        if unknown:
            raise ValueError(f"socketio.connectionStateRecovery: unknown key(s) {unknown}; "
                             f"known: {sorted(RECOVERY_DEFAULTS)}")
        options = {**RECOVERY_DEFAULTS, **value}
        name = "socketio.connectionStateRecovery."
        window = milliseconds(options["maxDisconnectionDuration"],
                              name + "maxDisconnectionDuration")
        if window <= 0:
            raise ValueError(name + "maxDisconnectionDuration must be positive")
        return RecoveryOptions(
            window=window,
            presence_grace=min(window, self.presence_grace),
            catch_up=milliseconds(options["catchUpMs"], name + "catchUpMs"),
            history=HistoryLimits(
                window=window,
                max_per_channel=positive_int(options["maxPacketsPerChannel"],
                                             name + "maxPacketsPerChannel"),
                max_bytes=positive_int(options["maxBytes"], name + "maxBytes")))

    def _cluster(self, key: str, default: Any) -> Any:
        return section(self.raw, "cluster").get(key, default)

    @property
    def cluster_enabled(self) -> bool:
        """Ours: with Redis presence, instances sharing the Redis act as one (default on)."""
        return self._cluster("enabled", True) is not False

    @property
    def cluster_heartbeat_interval(self) -> float:
        return max(0.01, milliseconds(self._cluster("heartbeatInterval", 5000),
                                      "cluster.heartbeatInterval"))

    @property
    def cluster_liveness_ttl(self) -> float:
        """A dead instance's members are removed (and their leaving announced) this long
        after its last heartbeat, plus up to one heartbeat interval."""
        return max(0.02, milliseconds(self._cluster("livenessTtl", 15000),
                                      "cluster.livenessTtl"))


def parse_channel_bounds(limits: dict[str, Any]) -> ChannelLimits:
    """The core's bounds of the ``limits`` object (docs/limits.md); those of the ``socketio``
    object are ``ChannelSettings``'."""

    def counted(key: str, default: int, *, zero_ok: bool = False) -> int:
        return count(limits, key, default, f"limits.{key}", zero_ok=zero_ok)

    return ChannelLimits(
        max_channel_name=counted("maxChannelNameLength", _CHANNELS.max_channel_name),
        max_subscriptions=counted("maxSubscriptions", _CHANNELS.max_subscriptions),
        max_subscriptions_per_address=counted("maxSubscriptionsPerAddress",
                                              _CHANNELS.max_subscriptions_per_address,
                                              zero_ok=True),
        max_parked_per_address=counted("maxParkedSessionsPerAddress",
                                       _CHANNELS.max_parked_per_address, zero_ok=True))
