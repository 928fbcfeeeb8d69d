"""Reading `laravel-echo-server.json` the way laravel-echo-server 1.6.3 does, minus its traps.

An existing reference config must work unchanged, so every key keeps the reference's name and
default, the `LARAVEL_ECHO_SERVER_*` overrides and `.env` apply as in the reference, and unknown
keys are only warned about. Where we deliberately differ (a deep instead of a shallow merge of
the defaults, no crash on `LARAVEL_ECHO_SERVER_REDIS_*` without `databaseConfig.redis`), the
config says so in `Config.warnings`, so nobody is surprised when moving from the reference.

About 1,300 lines: one property per setting, each holding its reference default, its
validation and its error message, so that a setting's whole meaning sits in one place.
Splitting the file by section would scatter the validators that every section shares.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import logging
import math
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import quote

from channel_auth.jwt_auth import JwtConfigError, JwtSettings
from echo_server.apps.file_store import file_apps
from echo_server.apps.manager import parse_app_manager
from echo_server.apps.model import App, AppConfigError, parse_apps
from echo_server.apps.postgres import PostgresSettings
from echo_server.apps.reverb import reverb_entry, reverb_listen_address
from echo_server.core.history import HistoryLimits
from echo_server.core.recovery import RecoveryOptions
from echo_server.limits import LimitSettings, parse_limits
from echo_server.process import dotenv, logformat
from echo_server.webhooks.settings import (
    DeliverySettings,
    Endpoint,
    WebhookConfigError,
    delivery_settings,
)
from echo_server.webhooks.settings import endpoints as webhook_endpoints

logger = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = "laravel-echo-server.json"

# The reference's defaults (laravel-echo-server 1.6.3, `EchoServer.defaultOptions`).
# `secureOptions` is Node's `constants.SSL_OP_NO_TLSv1`, which is also OpenSSL's value for it;
# files written by the reference's `init` contain it.
DEFAULTS: dict[str, Any] = {
    "authHost": "http://localhost",
    "authEndpoint": "/broadcasting/auth",
    "clients": [],
    "database": "redis",
    "databaseConfig": {
        "redis": {},
        "sqlite": {"databasePath": "/database/laravel-echo-server.sqlite"},
    },
    "devMode": False,
    "host": None,
    "port": 6001,
    "protocol": "http",
    "socketio": {},
    "secureOptions": 67108864,
    "sslCertPath": "",
    "sslKeyPath": "",
    "sslCertChainPath": "",
    "sslPassphrase": "",
    "subscribers": {"http": True, "redis": True},
    "apiOriginAllow": {
        "allowCors": False,
        "allowOrigin": "",
        "allowMethods": "",
        "allowHeaders": "",
    },
}

# Top-level keys the reference reads although they have no default.
# Keys the reference does not know, read only when present: ours, documented in the README.
OPTIONAL_KEYS = frozenset({"headers", "authVerifyTls", "authTimeout", "authCacheTtl",
                           "authMaxConnections", "authMaxConnectionsPerAddress",
                           "authMaxPendingPerAddress", "authQueueTimeout", "jwt",
                           "channels", "instanceId", "metrics", "sources", "cluster", "limits",
                           "trustedProxies", "log", "health", "pusher", "workers", "webhooks",
                           "workerPorts", "apps", "appManager"})
KNOWN_KEYS = frozenset(DEFAULTS) | OPTIONAL_KEYS

# Our own settings live inside `socketio`, which the reference hands to socket.io unchanged, so
# a file using them still starts the reference. Values are those the reference was observed with.
SOCKETIO_DEFAULTS: dict[str, Any] = {
    "path": "/socket.io",
    "pingInterval": 25000,
    "pingTimeout": 20000,
    "upgradeTimeout": 10000,
    "maxHttpBufferSize": 1_000_000,
    "transports": ["polling", "websocket"],
    "origins": "*:*",
    "cookie": "io",
    "allowUpgrades": True,
    "connectTimeout": 45000,
    "writeBufferHighWater": 4 * 1024 * 1024,
    "maxChannelsPerSocket": 10_000,
    "maxPendingAuthPerSocket": 100,
    "whisperMaxBytes": 10_000,
    "whisperRate": 10,
    "presenceGraceMs": 5000,
}
# socket.io's own option (off unless the file has it: it changes the wire for Engine.IO 4
# clients); our history bounds sit next to its window.
RECOVERY_DEFAULTS: dict[str, Any] = {
    "maxDisconnectionDuration": 120_000,
    "maxPacketsPerChannel": 1000,
    "maxBytes": 64 * 1024 * 1024,
    # Recovery on another instance: how long a reconnect may wait for that instance's stream
    # delivery to reach the client's place (a restarted instance reads its backlog first).
    "catchUpMs": 10_000,
}
KNOWN_TRANSPORTS = ("polling", "websocket")

ENV_OVERRIDES: dict[str, str] = {
    "LARAVEL_ECHO_SERVER_AUTH_HOST": "authHost",
    "LARAVEL_ECHO_SERVER_DEBUG": "devMode",
    "LARAVEL_ECHO_SERVER_HOST": "host",
    "LARAVEL_ECHO_SERVER_PORT": "port",
    "LARAVEL_ECHO_SERVER_REDIS_HOST": "databaseConfig.redis.host",
    "LARAVEL_ECHO_SERVER_REDIS_PORT": "databaseConfig.redis.port",
    "LARAVEL_ECHO_SERVER_REDIS_PASSWORD": "databaseConfig.redis.password",
    "LARAVEL_ECHO_SERVER_PROTO": "protocol",
    "LARAVEL_ECHO_SERVER_SSL_CERT": "sslCertPath",
    "LARAVEL_ECHO_SERVER_SSL_KEY": "sslKeyPath",
    "LARAVEL_ECHO_SERVER_SSL_CHAIN": "sslCertChainPath",
    "LARAVEL_ECHO_SERVER_SSL_PASS": "sslPassphrase",
}

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
# The reference's own port sanitiser: two to five trailing digits, optional trailing slash.
_PORT_PATTERN = re.compile(r"([0-9]{2,5})/?$")


class ConfigError(Exception):
    """The configuration cannot be used; the message is meant for the operator."""


# --------------------------------------------------------------------------- JS semantics


def js_string(value: Any) -> str:
    """`String(value)` in JavaScript: the reference compares these strings, not Python's."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ",".join("" if item is None else js_string(item) for item in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


def js_truthy(value: Any) -> bool:
    """JavaScript truthiness: `{}`, `[]` and `"false"` are true, `0`, `""` and null are not."""
    if value is None or value is False or value == "":
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value != 0 and not math.isnan(value)
    return True


# --------------------------------------------------------------------------- merging


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Objects merge key by key, anything else (lists included) is replaced by `override`."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _note_subscribers(given: dict[str, Any], missing: list[str], _file: dict[str, Any]) -> str:
    names = " and ".join(missing)
    return (
        f"`subscribers` does not set {names}; the reference's shallow merge of defaults "
        f"would leave {'them' if len(missing) > 1 else 'it'} unset and turn the {names} "
        f"subscriber{'s' if len(missing) > 1 else ''} OFF. echo-server merges deeply and keeps "
        f"the default (on); set it explicitly to silence this warning"
    )


def _note_api_origin(
    given: dict[str, Any], missing: list[str], _file: dict[str, Any]
) -> str | None:
    if not js_truthy(given.get("allowCors")):
        return None
    headers = ", ".join(f"`apiOriginAllow.{key}`" for key in missing if key != "allowCors")
    if not headers:
        return None
    return (
        f"{headers} not set while allowCors is on; the reference would send the literal "
        f"header value 'undefined'. echo-server uses the default (empty)"
    )


def _note_database(given: dict[str, Any], missing: list[str], file: dict[str, Any]) -> str | None:
    if "sqlite" not in missing or file.get("database") != "sqlite":
        return None
    return (
        "`databaseConfig` has no `sqlite` entry; the reference would fail to open its "
        "sqlite database. echo-server keeps presence in memory for sqlite anyway"
    )


def _note_generic(given: dict[str, Any], missing: list[str], _file: dict[str, Any]) -> str:
    return (
        f"an object in the file omits {', '.join(missing)}; the reference would leave "
        "them unset, echo-server uses the defaults"
    )


_SHALLOW_NOTES = {
    "subscribers": _note_subscribers,
    "apiOriginAllow": _note_api_origin,
    "databaseConfig": _note_database,
}


def shallow_merge_notes(file_options: Mapping[str, Any]) -> list[str]:
    """Warnings for each top-level key where the reference's shallow merge differs in effect.

    The reference does `Object.assign(defaults, file)`, so a partial object in the file drops
    the defaults of its siblings. Only differences that change behaviour are reported.
    """
    notes: list[str] = []
    for key, default in DEFAULTS.items():
        given = file_options.get(key)
        if not (isinstance(default, dict) and default and isinstance(given, dict)):
            continue
        missing = [name for name in default if name not in given]
        if not missing:
            continue
        describe = _SHALLOW_NOTES.get(key, _note_generic)
        note = describe(given, missing, dict(file_options))
        if note:
            notes.append(note)
    return notes


# --------------------------------------------------------------------------- environment


def effective_environ(environ: Mapping[str, str] | None, cwd: str) -> dict[str, str]:
    """Real environment plus `.env` from the working directory, real variables winning.

    Like the reference (`require('dotenv').config()`), `.env` is read from the process working
    directory. The reference README says it is read from the config directory; it is not.
    """
    real = dict(os.environ if environ is None else environ)
    return {**dotenv.load(os.path.join(cwd, ".env"), real), **real}


def _set_path(options: dict[str, Any], dotted: str, value: str) -> None:
    *parents, leaf = dotted.split(".")
    target = options
    for name in parents:
        if not isinstance(target.get(name), dict):
            target[name] = {}
        target = target[name]
    target[leaf] = value


def apply_env_overrides(
    options: dict[str, Any], env: Mapping[str, str], file_options: Mapping[str, Any] | None
) -> list[str]:
    """Apply `LARAVEL_ECHO_SERVER_*` to `options` in place; return warnings.

    As in the reference, an empty variable counts as unset and values stay strings. `${VAR}`
    left in a value (a real variable, not from `.env`) is resolved too; the reference replaces
    the whole value by the first reference's target, which is the same for `${VAR}` alone.
    """
    warnings: list[str] = []
    for variable, dotted in ENV_OVERRIDES.items():
        value = env.get(variable, "")
        if not value:
            continue
        value = dotenv.expand(value, env)
        if dotted.startswith("databaseConfig.redis.") and file_options is not None:
            config_db = file_options.get("databaseConfig")
            if not (isinstance(config_db, dict) and isinstance(config_db.get("redis"), dict)):
                warnings.append(
                    f"{variable} is set but the config file has no "
                    "`databaseConfig.redis` object; the reference would crash at start-up. "
                    "echo-server creates it"
                )
        _set_path(options, dotted, value)
    return warnings


# --------------------------------------------------------------------------- origins


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


def _split_origin(origin: str) -> tuple[str, str, int] | None:
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


# --------------------------------------------------------------------------- numbers


def _milliseconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{name} must be a number of milliseconds")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of milliseconds, not {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a non-negative number of milliseconds")
    return number / 1000.0


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, not {value!r}") from None
    if isinstance(value, bool) or number <= 0:
        raise ValueError(f"{name} must be a positive integer")
    return number


def parse_port(value: Any) -> int:
    """The reference keeps only the trailing digits, so `"http://host:6001"` means 6001.

    0 asks the OS for a free port (tests and embedding use it)."""
    if js_string(value) == "0":
        return 0
    match = _PORT_PATTERN.search(js_string(value))
    if match is None or not 0 <= int(match.group(1)) < 65536:
        raise ValueError(f"port: cannot find a port number in {value!r}")
    return int(match.group(1))


# --------------------------------------------------------------------------- Config


def parse_log_format(section: Any, environ: Mapping[str, str]) -> str:
    """Ours: `ECHO_LOG_FORMAT` over `log.format`, "text" (default) or "json" (one JSON object
    per line, for log pipelines: see logformat.py)."""
    if section is not None and not isinstance(section, dict):
        raise ValueError('`log` must be an object, e.g. {"format": "json"}')
    value = environ.get("ECHO_LOG_FORMAT") or (section or {}).get("format") or "text"
    if value not in logformat.FORMATS:
        raise ValueError(f"log format {value!r} (ECHO_LOG_FORMAT or log.format) is not one "
                         "of " + ", ".join(repr(name) for name in logformat.FORMATS))
    return str(value)


def parse_workers(value: Any) -> int:
    """A positive number of worker processes, or "auto": the cores this process may use."""
    if value == "auto":  # the cores this process may run on (its affinity: containers)
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    return _positive_int(value, "workers (a number, or \"auto\")")


def parse_worker_ports(value: Any, workers: int) -> list[int]:
    """`workerPorts`: each worker's own port besides the shared one, for a proxy in front (it
    connects from one address, which the shared port's hashing would put on one worker): the
    first of ``workers`` consecutive ports, or one per worker (`6002`, `"6002,6003"`,
    `[6002, 6003]`)."""
    name = "workerPorts (the first port, or one port per worker)"
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, list):
        ports = [_positive_int(port, name) for port in value]
        if len(ports) != workers:
            raise ValueError(f"workerPorts lists {len(ports)} ports for {workers} workers")
    else:
        first = _positive_int(value, name)
        ports = list(range(first, first + workers))
    if max(ports) > 65535:
        raise ValueError(f"workerPorts: {max(ports)} is not a port")
    return ports


def _optional_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


@dataclass
class Config:
    """The merged options under the reference's key names, plus typed views of them.

    `raw` is what the reference's `this.options` would be (deeply merged), so any component can
    read a key that has no property here. Properties compute on access so that an in-memory
    change to `raw` (such as `ensure_dev_client`) is seen everywhere.
    """

    raw: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    config_file: str = DEFAULT_CONFIG_FILE
    # The file's own object, as read (None: there was no file): what a reload compares with.
    file_options: dict[str, Any] | None = None
    # The environment the config was resolved with (real env over `.env`), for sections
    # such as `jwt` whose every field has an environment override.
    environ: dict[str, str] = field(default_factory=dict)

    @property
    def from_file(self) -> bool:
        return self.file_options is not None

    @cached_property
    def jwt(self) -> JwtSettings | None:
        """Ours: handshake JWT settings from the `jwt` section and `ECHO_JWT_*`; None when off."""
        return JwtSettings.from_config(self.raw.get("jwt"), self.environ)

    # -- listening
    @property
    def host(self) -> str | None:
        return _optional_str(self.raw.get("host"))

    @property
    def port(self) -> int:
        return parse_port(self.raw.get("port"))

    @property
    def protocol(self) -> str:
        return str(self.raw.get("protocol") or "http").lower()

    @property
    def ssl_cert_path(self) -> str | None:
        return _optional_str(self.raw.get("sslCertPath"))

    @property
    def ssl_key_path(self) -> str | None:
        return _optional_str(self.raw.get("sslKeyPath"))

    @property
    def ssl_chain_path(self) -> str | None:
        return _optional_str(self.raw.get("sslCertChainPath"))

    @property
    def ssl_passphrase(self) -> str | None:
        return _optional_str(self.raw.get("sslPassphrase"))

    @property
    def ssl_secure_options(self) -> int:
        """OpenSSL option bits (`ssl.OP_*`, same values as Node's `constants.SSL_OP_*`)."""
        value = self.raw.get("secureOptions") or 0
        try:
            bits = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"secureOptions must be an integer, not {value!r}") from None
        if isinstance(value, bool | float) or not 0 <= bits < 2**63:
            raise ValueError(f"secureOptions must be a non-negative integer, not {value!r}")
        return bits

    @property
    def dev_mode(self) -> bool:
        return self.raw.get("devMode") is True

    # -- auth
    @property
    def auth_hosts(self) -> list[str]:
        """authHost as a list; the reference falls back to `host`, then `http://localhost`."""
        value = self.raw.get("authHost")
        hosts = value if isinstance(value, list) else [value]
        found = [str(item) for item in hosts if js_truthy(item)]
        if found:
            return found
        if self.host:
            return [self.host if "://" in self.host else f"http://{self.host}"]
        return ["http://localhost"]

    @property
    def auth_endpoint(self) -> str:
        return str(self.raw.get("authEndpoint") or "/broadcasting/auth")

    @property
    def auth_verify_tls(self) -> bool:
        """Ours: the reference never verifies the auth host's certificate; we do unless told."""
        value = self.raw.get("authVerifyTls", True)
        return value not in (False, "false", "0", 0)

    @property
    def metrics_enabled(self) -> bool:
        """Ours: ``metrics.enabled`` (default true) serves ``GET /metrics``."""
        section = self.raw.get("metrics")
        return not (isinstance(section, dict) and section.get("enabled") is False)

    def _cluster(self, key: str, default: Any) -> Any:
        section = self.raw.get("cluster")
        return section.get(key, default) if isinstance(section, dict) else default

    @property
    def cluster_enabled(self) -> bool:
        """Ours: with Redis presence, instances sharing the Redis act as one (default on)."""
        return self._cluster("enabled", True) is not False

    @property
    def cluster_heartbeat_interval(self) -> float:
        return max(0.01, _milliseconds(self._cluster("heartbeatInterval", 5000),
                                       "cluster.heartbeatInterval"))

    @property
    def cluster_liveness_ttl(self) -> float:
        """A dead instance's members are removed (and their leaving announced) this long
        after its last heartbeat, plus up to one heartbeat interval."""
        return max(0.02, _milliseconds(self._cluster("livenessTtl", 15000),
                                       "cluster.livenessTtl"))

    @property
    def status_sample_interval(self) -> float:
        """Ours: how often the status page's history is sampled (ms, default 1000)."""
        section = self.raw.get("metrics")
        value = section.get("sampleInterval", 1000) if isinstance(section, dict) else 1000
        return max(0.01, _milliseconds(value, "metrics.sampleInterval"))

    def _health(self, key: str, default: float) -> float:
        section = self.raw.get("health")
        value = section.get(key, default) if isinstance(section, dict) else default
        return _milliseconds(value, f"health.{key}")

    @property
    def drain_delay(self) -> float:
        """Ours: after SIGTERM, how long `/readyz` answers 503 while everything else keeps
        serving, so the orchestrator takes the instance out of its endpoints before its
        clients are closed (ms, default 0: close at once, as the reference does)."""
        return self._health("drainDelay", 0)

    @property
    def health_check_timeout(self) -> float:
        """Ours: how long `/readyz`, and the start's presence probe, wait for Redis to
        answer (ms, default 500); at start, a Redis slower than that leaves presence in
        memory for this run, with a warning."""
        return self._health("checkTimeout", 500)

    @property
    def metrics_token(self) -> str | None:
        """Ours: a token ``/metrics`` and the status page accept (Bearer or ``?token=``)."""
        section = self.raw.get("metrics")
        token = section.get("token") if isinstance(section, dict) else None
        return str(token) if token else None

    @property
    def auth_cache_ttl(self) -> float:
        """Ours: seconds to reuse an auth answer for the same credentials; 0 (off) by default."""
        return _milliseconds(self.raw.get("authCacheTtl", 0), "authCacheTtl")

    @property
    def auth_timeout(self) -> float:
        """Ours (ms in the file, like socket.io's timeouts): the reference waits forever.
        It starts when the request has a connection, not while it waits for one."""
        return _milliseconds(self.raw.get("authTimeout", 10000), "authTimeout")

    @property
    def auth_max_connections(self) -> int:
        """Ours: requests to `authHost` in flight at once, all clients together."""
        value = self.raw.get("authMaxConnections", 100)
        return _positive_int(value, "authMaxConnections")

    @property
    def auth_max_connections_per_address(self) -> int:
        """Ours: how many of those one client address may hold; its further requests wait
        for their turn, which comes round-robin between the addresses waiting."""
        value = self.raw.get("authMaxConnectionsPerAddress", 25)
        return _positive_int(value, "authMaxConnectionsPerAddress")

    @property
    def auth_max_pending_per_address(self) -> int:
        """Ours: requests of one client address in flight or waiting; beyond, the subscribe
        is refused with 429 without asking `authHost`."""
        value = self.raw.get("authMaxPendingPerAddress", 1000)
        return _positive_int(value, "authMaxPendingPerAddress")

    @property
    def auth_queue_timeout(self) -> float:
        """Ours (ms): how long a request may wait for a connection; then it fails with 503,
        never mistaken for the app's slow answer (0)."""
        return _milliseconds(self.raw.get("authQueueTimeout", 10000), "authQueueTimeout")

    # -- HTTP API
    @property
    def clients(self) -> list[dict[str, Any]]:
        value = self.raw.get("clients")
        found = [item for item in value if isinstance(item, dict)] \
            if isinstance(value, list) else []
        reverb = self.reverb_client
        if reverb is not None and not any(c.get("key") == reverb["key"] for c in found):
            found.append(reverb)
        return found

    @property
    def apps(self) -> list[App]:
        """Every app of the file: `clients`, our `apps` (`[{appId, key, secret, ...}]`, names
        in docs/apps.md), Reverb's `.env`."""
        try:
            return file_apps(self.clients, self.raw.get("apps"), self.environ)
        except AppConfigError as error:
            raise ConfigError(str(error)) from None

    @property
    def pusher_socket_ids(self) -> bool:
        """Socket ids pusher-php-server accepts (``<digits>.<digits>``), for every client,
        while any app may be a Pusher app: one of the file's has a secret, or a database of
        apps is configured."""
        return self.app_manager is not None or any(app.signs for app in self.apps)

    @cached_property
    def app_manager(self) -> PostgresSettings | None:
        """Ours: `appManager` (and `ECHO_APPS_DATABASE_URL`): None for the file's apps only,
        else the PostgreSQL store's settings (docs/apps.md)."""
        try:
            return parse_app_manager(self.raw.get("appManager"), self.environ)
        except AppConfigError as error:
            raise ConfigError(str(error)) from None

    @property
    def pusher_timeouts(self) -> tuple[float, float]:
        """Ours: `"pusher": {"activityTimeoutMs", "signinTimeoutMs"}` — the silence after
        which the server pings a Pusher client (default 30 s, what pusher-js is told), and,
        with `jwt.required`, the time a Pusher connection has to `pusher:signin` (default
        30 s)."""
        section = self.raw.get("pusher") or {}
        if not isinstance(section, dict):
            raise ValueError("`pusher` must be an object")
        activity = _milliseconds(section.get("activityTimeoutMs", 30_000),
                                 "pusher.activityTimeoutMs")
        signin = _milliseconds(section.get("signinTimeoutMs", 30_000), "pusher.signinTimeoutMs")
        if activity <= 0:
            raise ValueError("pusher.activityTimeoutMs must be positive")
        return activity, signin if self.jwt is not None and self.jwt.required else 0.0

    @property
    def reverb_client(self) -> dict[str, Any] | None:
        """Reverb's `.env` (`REVERB_APP_ID`, `REVERB_APP_KEY`, `REVERB_APP_SECRET`): the app
        `php artisan reverb:start` served, so an app switches to echo-server by running it
        with that `.env`, changing neither `config/reverb.php` nor the frontend."""
        return reverb_entry(self.environ)

    @property
    def reverb_listen(self) -> tuple[str | None, int] | None:
        """Where Reverb listened (`REVERB_SERVER_HOST`, `REVERB_SERVER_PORT`, default 8080),
        which the frontend's `VITE_REVERB_PORT` points at: served too, with every route,
        when a Reverb app is configured and the port is not the main one."""
        if self.reverb_client is None:
            return None
        host, port_text = reverb_listen_address(self.environ)
        port = parse_port(port_text)
        if port == self.port:
            return None
        return host or self.host or None, port

    @cached_property
    def webhook_endpoints(self) -> list[Endpoint]:
        """Ours (Soketi's names): the `webhooks` of each `clients` and `apps` entry, signed
        with its `secret`; an `apps` entry's hear only its own channels."""
        return webhook_endpoints(self.apps)

    @cached_property
    def webhook_delivery(self) -> DeliverySettings:
        """Ours: the top-level `webhooks` object (batching, timeout, retries, bounds)."""
        try:
            return delivery_settings(self.raw.get("webhooks"))
        except WebhookConfigError as error:
            raise ConfigError(str(error)) from None

    @property
    def api_origin_allow(self) -> dict[str, Any]:
        value = self.raw.get("apiOriginAllow")
        return value if isinstance(value, dict) else {}

    @property
    def extra_headers(self) -> dict[str, str]:
        value = self.raw.get("headers")
        return {str(k): js_string(v) for k, v in value.items()} if isinstance(value, dict) else {}

    @property
    def subscribers_http(self) -> bool:
        return js_truthy(self._section("subscribers").get("http"))

    @property
    def subscribers_redis(self) -> bool:
        return js_truthy(self._section("subscribers").get("redis"))

    # -- presence and Redis
    @property
    def database(self) -> str:
        return str(self.raw.get("database") or "redis")

    @property
    def presence_backend(self) -> str:
        """`sqlite` becomes in-memory presence: it only has to outlive nothing but its sockets."""
        return {"sqlite": "memory", "redis": "redis"}.get(self.database, self.database)

    @property
    def redis_options(self) -> dict[str, Any]:
        value = self._section("databaseConfig").get("redis")
        return value if isinstance(value, dict) else {}

    @property
    def key_prefix(self) -> str:
        return str(self.redis_options.get("keyPrefix") or "")

    @property
    def publish_presence(self) -> bool:
        return js_truthy(self._section("databaseConfig").get("publishPresence"))

    @property
    def redis_url(self) -> str:
        """A redis-py URL for the ioredis options the reference would get.

        ioredis's Sentinel form (``sentinels: [{host, port}]`` with ``name``, and
        ``sentinelPassword``) becomes ``redis+sentinel://``; our ``clusterNodes: [{host, port}]``
        (ioredis takes Cluster nodes in a different constructor the reference never calls)
        becomes ``redis+cluster://``. ``url`` is taken as given, any of these forms included.
        """
        options = self.redis_options
        if options.get("url"):
            return str(options["url"])
        db = int(options.get("db") or 0)
        auth = _redis_auth(options.get("username"), options.get("password"))
        if options.get("sentinels"):
            hosts = _host_list(options["sentinels"], 26379, "databaseConfig.redis.sentinels")
            name = options.get("name")
            if not name or not isinstance(name, str):
                raise ValueError("databaseConfig.redis.sentinels needs `name`, the master's "
                                 "name the Sentinels monitor (e.g. \"mymaster\")")
            query = ""
            if options.get("sentinelPassword"):
                query = "?sentinel_password=" + quote(str(options["sentinelPassword"]), safe="")
            return f"redis+sentinel://{auth}{hosts}/{quote(name, safe='')}/{db}{query}"
        if options.get("clusterNodes"):
            hosts = _host_list(options["clusterNodes"], 6379, "databaseConfig.redis.clusterNodes")
            scheme = "rediss+cluster" if js_truthy(options.get("tls")) else "redis+cluster"
            return f"{scheme}://{auth}{hosts}"
        if options.get("path"):
            return f"unix://{auth}{quote(str(options['path']))}?db={db}"
        scheme = "rediss" if js_truthy(options.get("tls")) else "redis"
        host = str(options.get("host") or "127.0.0.1")
        if _is_ipv6(host):
            host = f"[{host}]"
        port = int(options.get("port") or 6379)
        return f"{scheme}://{auth}{host}:{port}/{db}"

    # -- event sources
    @property
    def source_urls(self) -> list[str]:
        """Ours: what the server listens to, besides the in-process bus that always runs.

        `ECHO_SOURCES` (comma-separated) over `sources` (a list of URLs, or one comma-separated
        string). Without either, the reference's settings: `subscribers.redis` with
        `databaseConfig.redis` becomes one `redis://` URL carrying `keyPrefix` as `?prefix=`.
        """
        value: Any = self.environ.get("ECHO_SOURCES") or self.raw.get("sources")
        if value:
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(u, str) for u in items):
                raise ValueError("`sources` must be a list of URLs (or a comma-separated string)")
            from broadcaster.sources import check_url

            urls = [url.strip() for url in items if url.strip()]
            for url in urls:
                check_url(url)
            return urls
        if not self.subscribers_redis:
            return []
        url = self.redis_url
        if self.key_prefix:
            url += ("&" if "?" in url else "?") + "prefix=" + quote(self.key_prefix, safe="")
        return [url]

    @property
    def workers(self) -> int:
        """Ours: processes serving the port (`ECHO_WORKERS` over `workers`; default 1)."""
        return parse_workers(self.environ.get("ECHO_WORKERS") or self.raw.get("workers", 1))

    @property
    def worker_ports(self) -> Any:
        """Ours: `ECHO_WORKER_PORTS` over `workerPorts`, as given (None when unset): which
        ports depends on the number of workers (`parse_worker_ports`)."""
        return self.environ.get("ECHO_WORKER_PORTS") or self.raw.get("workerPorts")

    @property
    def instance_id(self) -> str | None:
        """Ours: a name for this instance that survives restarts (`ECHO_INSTANCE_ID` over
        `instanceId`); a stream source names its consumer group after it."""
        value = self.environ.get("ECHO_INSTANCE_ID") or self.raw.get("instanceId")
        return str(value) if value not in (None, "") else None

    @property
    def log_format(self) -> str:
        return parse_log_format(self.raw.get("log"), self.environ)

    # -- socket.io
    @property
    def socketio(self) -> dict[str, Any]:
        return self._section("socketio")

    def _socketio(self, key: str) -> Any:
        value = self.socketio.get(key)
        return SOCKETIO_DEFAULTS[key] if value is None else value

    @property
    def socketio_path(self) -> str:
        path = "/" + str(self._socketio("path")).strip("/")
        return path

    @property
    def ping_interval(self) -> float:
        return _milliseconds(self._socketio("pingInterval"), "socketio.pingInterval")

    @property
    def ping_timeout(self) -> float:
        return _milliseconds(self._socketio("pingTimeout"), "socketio.pingTimeout")

    @property
    def upgrade_timeout(self) -> float:
        return _milliseconds(self._socketio("upgradeTimeout"), "socketio.upgradeTimeout")

    @property
    def handshake_timeout(self) -> float:
        """How long a client may take to join the namespace (socket.io 4's `connectTimeout`)."""
        return _milliseconds(self._socketio("connectTimeout"), "socketio.connectTimeout")

    @property
    def max_http_buffer_size(self) -> int:
        return _positive_int(self._socketio("maxHttpBufferSize"), "socketio.maxHttpBufferSize")

    @property
    def write_buffer_high_water(self) -> int:
        """Our own: bytes queued for one slow client before it is dropped."""
        value = self._socketio("writeBufferHighWater")
        return _positive_int(value, "socketio.writeBufferHighWater")

    @cached_property
    def limits(self) -> LimitSettings:
        """Ours: the `limits` object and `trustedProxies` (docs/limits.md)."""
        return parse_limits(self.raw.get("limits"), self.raw.get("trustedProxies"),
                            max_body=self.max_http_buffer_size + 64 * 1024)

    @property
    def max_channels_per_socket(self) -> int:
        """Our own: channels one connection may be in or asking for (the reference has no
        bound: one client could grow the server's memory without end)."""
        value = self._socketio("maxChannelsPerSocket")
        return _positive_int(value, "socketio.maxChannelsPerSocket")

    @property
    def max_pending_auth_per_socket(self) -> int:
        """Our own: authorization requests of one connection in flight at once; each is a
        request to `authHost`, so one client cannot make the server flood the app."""
        value = self._socketio("maxPendingAuthPerSocket")
        return _positive_int(value, "socketio.maxPendingAuthPerSocket")

    @property
    def whisper_max_bytes(self) -> int:
        """Our own: the largest client event (whisper) relayed, in bytes of JSON."""
        return _positive_int(self._socketio("whisperMaxBytes"), "socketio.whisperMaxBytes")

    @property
    def whisper_rate(self) -> float:
        """Our own: client events per second per connection (bursts of the same size); 0
        lifts the bound."""
        value = self._socketio("whisperRate")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("socketio.whisperRate must be a number of events per second")
        if not math.isfinite(value) or value < 0:
            raise ValueError("socketio.whisperRate must be a non-negative number")
        return float(value)

    @property
    def recovery(self) -> RecoveryOptions | None:
        """``socketio.connectionStateRecovery`` (socket.io's name and window): None when
        off. ``true`` or ``{}`` turn it on with the defaults."""
        value = self.socketio.get("connectionStateRecovery")
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
        window = _milliseconds(options["maxDisconnectionDuration"],
                               "socketio.connectionStateRecovery.maxDisconnectionDuration")
        if window <= 0:
            raise ValueError("socketio.connectionStateRecovery.maxDisconnectionDuration must "
                             "be positive")
        return RecoveryOptions(
            window=window,
            presence_grace=min(window, self.presence_grace),
            catch_up=_milliseconds(options["catchUpMs"],
                                   "socketio.connectionStateRecovery.catchUpMs"),
            history=HistoryLimits(
                window=window,
                max_per_channel=_positive_int(
                    options["maxPacketsPerChannel"],
                    "socketio.connectionStateRecovery.maxPacketsPerChannel"),
                max_bytes=_positive_int(options["maxBytes"],
                                        "socketio.connectionStateRecovery.maxBytes")))

    @property
    def presence_grace(self) -> float:
        """Our own: how long a presence member whose connection dropped (not closed by its
        client) stays, so a reload or a short drop announces neither leaving nor joining."""
        return _milliseconds(self._socketio("presenceGraceMs"), "socketio.presenceGraceMs")

    @property
    def transports(self) -> list[str]:
        value = self._socketio("transports")
        items = [value] if isinstance(value, str) else list(value)
        unknown = [item for item in items if item not in KNOWN_TRANSPORTS]
        if unknown or not items:
            raise ValueError(
                f"socketio.transports: expected polling and/or websocket, got {value!r}"
            )
        return items

    @property
    def allow_upgrades(self) -> bool:
        return js_truthy(self._socketio("allowUpgrades"))

    @property
    def cookie_name(self) -> str | None:
        """engine.io's `cookie` option: a name, or false for no cookie."""
        value = self._socketio("cookie")
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
        """Check a handshake's Origin (or, lacking one, its Referer) against `socketio.origins`.

        A request without either is allowed: only browsers send them, and the allow-list is
        about browsers. (socket.io 2 would refuse such a request once an allow-list is set,
        unless it lists `*:80`.) The literal origin `null` matches only an entry `null`.
        """
        patterns = self._origin_patterns
        if patterns is None or origin is None or origin == "":
            return True
        parts = _split_origin(origin)
        if parts is None:
            return any(pattern.host == origin.strip().lower() for pattern in patterns)
        return any(pattern.matches(*parts) for pattern in patterns)

    def _section(self, key: str) -> dict[str, Any]:
        value = self.raw.get(key)
        return value if isinstance(value, dict) else {}


def _redis_auth(username: Any, password: Any) -> str:
    user = quote(str(username), safe="") if username else ""
    if password:
        return f"{user}:{quote(str(password), safe='')}@"
    return f"{user}@" if user else ""


def _host_list(value: Any, default_port: int, name: str) -> str:
    """ioredis's ``[{host, port}, ...]`` (or ``"host:port"`` strings) as ``h:p,h2:p2``."""
    if not isinstance(value, list):
        raise ValueError(f"{name} must be a list of {{host, port}} objects")
    hosts: list[str] = []
    for item in value:
        if isinstance(item, str):  # "host:port" or "host"; IPv6 only in the object form
            host, _, port = item.partition(":") if item.count(":") == 1 else (item, "", "")
        elif isinstance(item, dict):
            host, port = str(item.get("host") or "127.0.0.1"), str(item.get("port") or "")
        else:
            raise ValueError(f"{name} must be a list of {{host, port}} objects")
        if _is_ipv6(host):
            host = f"[{host}]"
        hosts.append(f"{host}:{int(port or default_port)}")
    if not hosts:
        raise ValueError(f"{name} is empty")
    return ",".join(hosts)


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False


# --------------------------------------------------------------------------- loading


def resolve_config_path(
    config_file: str | None = None, directory: str | None = None, cwd: str | None = None
) -> str:
    """`<dir>/<config>` relative to the working directory, as the reference resolves it."""
    path = os.path.join(directory or "", config_file or DEFAULT_CONFIG_FILE)
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(cwd or os.getcwd(), path))


def read_config_file(path: str) -> dict[str, Any] | None:
    """The file's JSON object, or `None` when there is no file (embedded defaults)."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"config file {path} is not valid JSON: {error.msg} "
            f"(line {error.lineno}, column {error.colno})"
        ) from error
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must contain a JSON object")
    return data


def early_log_format(config_file: str = DEFAULT_CONFIG_FILE, directory: str | None = None,
                     cwd: str | None = None) -> str:
    """The log format, read before the configuration is loaded, so that what loading logs
    (its warnings) is already in it. Anything amiss gives "text": the load that follows
    refuses it with the error."""
    cwd = cwd or os.getcwd()
    try:
        file_options = read_config_file(resolve_config_path(config_file, directory, cwd))
        return parse_log_format((file_options or {}).get("log"), effective_environ(None, cwd))
    except (ConfigError, ValueError):
        return "text"


def _check_types(raw: Mapping[str, Any]) -> None:
    for key in ("databaseConfig", "subscribers", "apiOriginAllow", "socketio", "headers"):
        if key in raw and not isinstance(raw[key], dict):
            raise ConfigError(f"`{key}` must be an object")
    if not isinstance(raw.get("clients"), list):
        raise ConfigError("`clients` must be a list of {appId, key} objects")
    auth_host = raw.get("authHost")
    if not (auth_host is None or isinstance(auth_host, str | list)):
        raise ConfigError("`authHost` must be a string or a list of strings")


def _validate(config: Config) -> None:
    """Touch every typed property once so a bad value fails at start-up, not mid-traffic."""
    names = [
        "port", "ping_interval", "ping_timeout", "upgrade_timeout", "handshake_timeout",
        "max_http_buffer_size", "write_buffer_high_water", "max_channels_per_socket",
        "max_pending_auth_per_socket", "whisper_max_bytes", "whisper_rate", "transports",
        "presence_grace", "recovery", "webhook_endpoints", "webhook_delivery",
        "pusher_timeouts", "reverb_listen", "apps", "app_manager",
        "drain_delay", "health_check_timeout",
        "workers",
        "allowed_origins", "limits", "log_format",
        "ssl_secure_options",
        "auth_timeout", "auth_cache_ttl", "auth_max_connections",
        "auth_max_connections_per_address", "auth_max_pending_per_address", "auth_queue_timeout",
    ]  # fmt: skip
    uses_redis = (
        config.presence_backend == "redis" or config.subscribers_redis or config.publish_presence
    )
    if uses_redis:
        names.append("redis_url")
    names.append("source_urls")
    for name in names:
        try:
            getattr(config, name)
        except (TypeError, ValueError) as error:
            raise ConfigError(str(error)) from error
    try:
        config.jwt  # noqa: B018 - validated now, used later
    except JwtConfigError as error:
        raise ConfigError(f"jwt: {error}") from error


def _notices(config: Config, file_options: Mapping[str, Any]) -> list[str]:
    notes: list[str] = []
    unknown = sorted(key for key in file_options if key not in KNOWN_KEYS)
    if unknown:
        notes.append("unknown keys kept but not used by the reference: " + ", ".join(unknown))
    if config.database == "sqlite":
        notes.append(
            "database 'sqlite' means in-memory presence for this one instance; "
            "presence lists live only as long as the sockets they list"
        )
    elif config.database != "redis":
        notes.append(f"database {config.database!r} is not one the reference knows")
    if config.protocol not in ("http", "https"):
        notes.append(f"protocol {config.protocol!r} is neither http nor https")
    if config.allowed_origins is None:
        notes.append(
            "every origin may connect (socketio.origins '*:*', as in the reference); "
            "set socketio.origins to an allow-list to restrict browsers"
        )
    return notes


def _check_clients(clients: list[Any]) -> None:
    try:
        parse_apps(clients, "clients", legacy=True)
    except AppConfigError as error:
        raise ConfigError(str(error)) from None


def load_config(
    config_file: str = DEFAULT_CONFIG_FILE,
    directory: str | None = None,
    *,
    dev: bool = False,
    environ: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> Config:
    """Read, merge and check the configuration; warnings are logged once here.

    Raises `ConfigError` for a file that exists but cannot be read or used.
    """
    cwd = cwd or os.getcwd()
    path = resolve_config_path(config_file, directory, cwd)
    file_options = read_config_file(path)
    warnings: list[str] = []
    if file_options is None:
        logger.info("no config file at %s; using the embedded defaults", path)
    else:
        warnings += shallow_merge_notes(file_options)
    raw = deep_merge(DEFAULTS, file_options or {})
    env = effective_environ(environ, cwd)
    warnings += apply_env_overrides(raw, env, file_options)
    raw["devMode"] = dev or js_string(raw.get("devMode")) == "true"
    config = Config(
        raw=raw, warnings=warnings, config_file=path, file_options=file_options,
        environ=dict(env),
    )
    try:
        _check_types(raw)
        _check_clients(raw["clients"])
        _validate(config)
    except ConfigError as error:
        source = path if file_options is not None else "configuration (embedded defaults + env)"
        raise ConfigError(f"{source}: {error}") from error
    config.warnings += _notices(config, file_options or {})
    for warning in config.warnings:
        logger.warning("%s", warning)
    return config


# --------------------------------------------------------------------------- API clients


def generate_app_id() -> str:
    """16 hex digits, the reference's `crypto.randomBytes(8)`."""
    return secrets.token_hex(8)


def generate_key() -> str:
    """32 hex digits, the reference's `crypto.randomBytes(16)`."""
    return secrets.token_hex(16)


def ensure_dev_client(config: Config) -> dict[str, str] | None:
    """Without any API client the HTTP API is unusable; make one up, in memory only.

    Returns the new client so the caller can print it, or `None` when clients exist.
    """
    if config.apps:
        return None
    client = {"appId": generate_app_id(), "key": generate_key()}
    clients = config.raw.get("clients")
    if not isinstance(clients, list):
        config.raw["clients"] = clients = []
    clients.append(client)
    return client
