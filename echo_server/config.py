"""Reading `laravel-echo-server.json` the way laravel-echo-server 1.6.3 does, minus its traps.

An existing reference config must work unchanged, so every key keeps the reference's name and
default, the `LARAVEL_ECHO_SERVER_*` overrides and `.env` apply as in the reference, and unknown
keys are only warned about. Where we deliberately differ (a deep instead of a shallow merge of
the defaults, no crash on `LARAVEL_ECHO_SERVER_REDIS_*` without `databaseConfig.redis`), the
config says so in `Config.warnings`, so nobody is surprised when moving from the reference.

Here: the file, its merge with the reference's defaults, the environment, the checks at
load, and the `Config` that gathers every room's settings. Each room reads its own keys
next to what they configure (`process.settings`, `process.redis_settings`,
`transport.settings`, `core.settings`, `web.settings`, `channel_auth.settings`,
`adapters.pusher.settings`, `apps`, `webhooks.settings`), with the defaults of the code that
enforces them and the value checks every room shares (`echo_common.values`).

About 600 lines, most of them the reference's side (its defaults, where its shallow merge
differs, its environment overrides) and the order of the checks at load, which decides which
error an operator sees first: they read one merged object in one order, so they stay together.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from channel_auth.jwt_auth import JwtConfigError, JwtSettings
from channel_auth.settings import AuthSettings
from echo_common.values import js_string, js_truthy
from echo_server.adapters.pusher.settings import PusherTimeouts, pusher_timeouts
from echo_server.apps.file_store import file_apps
from echo_server.apps.manager import parse_app_manager
from echo_server.apps.model import App, AppConfigError, parse_apps
from echo_server.apps.postgres import PostgresSettings
from echo_server.apps.reverb import reverb_app, reverb_listen_address
from echo_server.core.limits import ChannelLimits
from echo_server.core.settings import ChannelSettings, parse_channel_bounds
from echo_server.process import dotenv
from echo_server.process.redis_settings import RedisSettings
from echo_server.process.settings import ProcessSettings, parse_log_format, parse_port
from echo_server.transport.addresses import TrustedProxies
from echo_server.transport.guard import HttpLimits
from echo_server.transport.settings import (
    EngineSettings,
    parse_http_limits,
    trusted_proxies,
    trusted_proxy_entries,
)
from echo_server.web.settings import WebSettings
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


class ConfigError(Exception):
    """The configuration cannot be used; the message is meant for the operator."""


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


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """The `limits` object and `trustedProxies`: the HTTP side's bounds, the core's bounds of
    the `limits` object (the rest of `ChannelLimits` is in `socketio`), the trusted proxies."""

    channels: ChannelLimits  # those of the `limits` object; the others keep their defaults
    http: HttpLimits
    trusted_proxies: TrustedProxies


@dataclass
class Config(ProcessSettings, AuthSettings, EngineSettings, ChannelSettings, WebSettings,
             RedisSettings):
    """The merged options under the reference's key names, plus typed views of them.

    `raw` is what the reference's `this.options` would be (deeply merged), so any component can
    read a key that has no property here. Properties compute on access so that an in-memory
    change to `raw` (such as `ensure_dev_client`) is seen everywhere. Each room reads its
    own part (its `settings` module, a base class here); what needs more than one part is read
    here.
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

    @property
    def clustered(self) -> bool:
        """Instances sharing the Redis act as one (core.cluster): Redis presence with the
        cluster not disabled. Workers (N > 1) need it; connection-state recovery on any
        instance builds on it."""
        return self.cluster_enabled and self.presence_backend == "redis"

    @cached_property
    def jwt(self) -> JwtSettings | None:
        """Ours: handshake JWT settings from the `jwt` section and `ECHO_JWT_*`; None when off."""
        return JwtSettings.from_config(self.raw.get("jwt"), self.environ)

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
    def apps(self) -> list[App]:
        """Every app of the file: `clients`, our `apps` (`[{appId, key, secret, ...}]`, names
        in docs/apps.md), Reverb's `.env`."""
        try:
            return file_apps(self.raw.get("clients"), self.raw.get("apps"), self.environ)
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
    def reverb_app(self) -> App | None:
        """Reverb's `.env` (`REVERB_APP_ID`, `REVERB_APP_KEY`, `REVERB_APP_SECRET`): the app
        `php artisan reverb:start` served, so an app switches to echo-server by running it
        with that `.env`, changing neither `config/reverb.php` nor the frontend."""
        return reverb_app(self.environ)

    @property
    def reverb_listen(self) -> tuple[str | None, int] | None:
        """Where Reverb listened (`REVERB_SERVER_HOST`, `REVERB_SERVER_PORT`, default 8080),
        which the frontend's `VITE_REVERB_PORT` points at: served too, with every route,
        when a Reverb app is configured and the port is not the main one."""
        if self.reverb_app is None:
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
    def pusher_timeouts(self) -> PusherTimeouts:
        """Ours: `"pusher": {"activityTimeoutMs", "pongTimeoutMs", "signinTimeoutMs"}`;
        signing in is timed only with `jwt.required` (`adapters.pusher.settings`)."""
        timeouts = pusher_timeouts(self.raw.get("pusher"))
        return timeouts if self.jwt is not None and self.jwt.required else replace(
            timeouts, signin=0.0)

    @cached_property
    def limits(self) -> LimitSettings:
        """Ours: the `limits` object and `trustedProxies` (docs/limits.md), read by the rooms
        that enforce them (`transport.settings`, `core.settings`)."""
        section = self.raw.get("limits")
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise ValueError("`limits` must be an object")
        proxies = trusted_proxy_entries(self.raw.get("trustedProxies"))
        http = parse_http_limits(section, self.max_http_buffer_size)
        return LimitSettings(channels=parse_channel_bounds(section), http=http,
                             trusted_proxies=trusted_proxies(proxies))

    @property
    def channel_limits(self) -> ChannelLimits:
        """The core's bounds, from both objects that hold them (`limits` and `socketio`),
        and the trusted proxies, whose clients are never bounded as one."""
        limits = self.limits
        return replace(limits.channels, max_channels=self.max_channels_per_socket,
                       max_pending_auth=self.max_pending_auth_per_socket,
                       whisper_max_bytes=self.whisper_max_bytes,
                       whisper_rate=self.whisper_rate, trusted=limits.trusted_proxies.trusts)


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
