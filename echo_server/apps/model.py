"""One app, typed: what a ``clients`` or ``apps`` entry of laravel-echo-server.json, Reverb's
``.env`` or a row of the PostgreSQL store says, parsed and validated here once, so that no
consumer reads a raw dict again and the same bad input gives the same error wherever it
comes from.

Names are those a ``clients`` entry already uses (``appId``, ``key``, ``secret``,
``enableClientMessages``, ``maxConnections``, ``allowedOrigins``, ``activityTimeoutMs``,
``webhooks``), and Soketi's for the rest (``maxBackendEventsPerSecond``,
``maxPresenceMembersPerChannel``, ``maxEventPayloadInKb``, ...), so a Soketi app file reads
as it is. A bound of 0 means "no bound of the app's own": the server-wide setting applies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from channel_auth.rules import ChannelRule, RuleConfigError, parse_rules

from .endpoints import MAX_HOSTS, host_names, path_problem
from .tags import tag_of

WEBHOOK_EVENT_TYPES = ("channel_occupied", "channel_vacated", "member_added", "member_removed",
                       "client_event", "cache_miss")
MAX_WEBHOOK_HEADERS = 32
# The `app_id` labels of /metrics (web/metrics.py) for the default app and for the apps past
# the labelled ones: an isolated app's id would pass for either there, so none may have one.
DEFAULT_APP_LABEL = "default"
OTHER_APPS_LABEL = "other"
RESERVED_IDS = frozenset({DEFAULT_APP_LABEL, OTHER_APPS_LABEL})

# A legacy `clients` entry may carry anything (the reference ignores what it does not know);
# an `apps` entry is ours, so a misspelt option is an error rather than a silent default.
APP_KEYS = frozenset({
    "appId", "id", "key", "secret", "name", "enabled", "apiKey",
    "enableClientMessages", "maxConnections", "maxConnectionsPerAddress",
    "maxChannelsPerConnection",
    "maxPresenceMembersPerChannel", "maxPresenceMemberSizeInKb", "maxEventPayloadInKb",
    "maxEventBatchSize", "maxEventChannelsAtOnce", "maxEventNameLength",
    "maxBackendEventsPerSecond", "maxClientEventsPerSecond", "maxReadRequestsPerSecond",
    "allowedOrigins", "activityTimeoutMs", "webhooks", "channels",
    "hosts", "socketioPath", "authHost", "authEndpoint",
})


class AppConfigError(ValueError):
    """An app entry that cannot be used; the message names the entry and the field."""


@dataclass(frozen=True, slots=True)
class Webhook:
    """One endpoint of an app (Soketi's ``{url, event_types, filter, headers}``)."""

    url: str
    event_types: frozenset[str]
    starts_with: str = ""
    ends_with: str = ""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class AppLimits:
    """What one app may hold and send; 0 leaves the server-wide bound (or none) in charge."""

    max_connections: int = 0
    max_connections_per_address: int = 0  # 0: a quarter of max_connections (4100 beyond)
    max_channels_per_connection: int = 0
    max_presence_members: int = 0
    max_presence_member_bytes: int = 0
    max_event_bytes: int = 0
    max_batch_size: int = 0
    max_event_channels: int = 0
    max_event_name_length: int = 0
    client_events: bool = True


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Soketi's per-app rates, in events (or requests) per second; 0: no bound."""

    backend_events: float = 0.0  # published through the HTTP API
    client_events: float = 0.0  # whispers, per connection
    api_reads: float = 0.0  # GET requests of the HTTP API


@dataclass(frozen=True, slots=True)
class App:
    id: str
    key: str
    secret: str = ""  # "": not a Pusher app (a laravel-echo-server API client)
    name: str = ""
    enabled: bool = True
    api_key: str | None = None  # opens the unsigned API when the key is public
    limits: AppLimits = AppLimits()
    rates: RateLimits = RateLimits()
    allowed_origins: tuple[str, ...] = ()  # empty: the server's socketio.origins decide
    activity_timeout: float = 0.0  # seconds; 0: the server's pusher.activityTimeoutMs
    webhooks: tuple[Webhook, ...] = ()
    # Compared (patterns compare by their text), but not hashed: a rule holds dicts.
    channel_rules: tuple[ChannelRule, ...] = field(default=(), hash=False)
    # What its channel names end with behind the protocols (tags.py): "" for the default
    # app, which every `clients` entry and Reverb's `.env` share; an `apps` entry's or a
    # database row's own channels otherwise.
    tag: str = ""
    # Socket.IO for an isolated app: the host names its pages connect to on the default
    # path (the default app keeps every other), its own path on any host name (without the
    # trailing slash), and its Laravel's /broadcasting/auth for their private channels.
    hosts: tuple[str, ...] = ()
    socketio_path: str = ""
    auth_host: str = ""
    auth_endpoint: str = "/broadcasting/auth"

    @property
    def isolated(self) -> bool:
        return bool(self.tag)

    @property
    def serves_socketio(self) -> bool:
        """An isolated app whose Socket.IO pages have an endpoint of their own."""
        return bool(self.tag and (self.hosts or self.socketio_path))

    @property
    def signs(self) -> bool:
        """A Pusher app: its clients, HTTP API requests and webhooks are signed with the
        secret."""
        return bool(self.secret)

    @property
    def unsigned_key(self) -> str | None:
        """The key that opens laravel-echo-server's unsigned API (and the status page): an
        API client's ``key``; but a Pusher app's ``key`` is public (it ships in every page's
        JavaScript), so for one only its own ``apiKey``, if it sets one."""
        return self.api_key if self.signs else self.key

    def origin_allowed(self, origin: str | None) -> bool:
        """Exact origins (``https://app.test``), or ``*``."""
        allowed = self.allowed_origins
        return not allowed or "*" in allowed or (origin is not None
                                                 and origin.rstrip("/") in allowed)


# --------------------------------------------------------------------------- parsing


def _bounded_int(entry: Mapping[str, Any], name: str, where: str) -> int:
    value = entry.get(name) or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AppConfigError(f"{where}.{name} must be a positive integer")
    return value


def _non_negative(value: Any, message: str) -> float:
    """``value`` if it is a finite JSON number, 0 or more (true and false are not numbers
    here), else the entry's ``message``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value >= 0):
        raise AppConfigError(message)
    return value


def _rate(entry: Mapping[str, Any], name: str, where: str) -> float:
    """Soketi writes -1 for "no bound"; so does 0 here."""
    value = entry.get(name)
    if value is None or value == -1:
        return 0.0
    return float(_non_negative(
        value, f"{where}.{name} must be a number per second (-1 or 0: no bound)"))


def _kilobytes(entry: Mapping[str, Any], name: str, where: str) -> int:
    return int(_non_negative(entry.get(name) or 0,
                             f"{where}.{name} must be a positive number of kilobytes") * 1024)


def _limits(entry: Mapping[str, Any], where: str) -> AppLimits:
    return AppLimits(
        max_connections=_bounded_int(entry, "maxConnections", where),
        max_connections_per_address=_bounded_int(entry, "maxConnectionsPerAddress", where),
        max_channels_per_connection=_bounded_int(entry, "maxChannelsPerConnection", where),
        max_presence_members=_bounded_int(entry, "maxPresenceMembersPerChannel", where),
        max_presence_member_bytes=_kilobytes(entry, "maxPresenceMemberSizeInKb", where),
        max_event_bytes=_kilobytes(entry, "maxEventPayloadInKb", where),
        max_batch_size=_bounded_int(entry, "maxEventBatchSize", where),
        max_event_channels=_bounded_int(entry, "maxEventChannelsAtOnce", where),
        max_event_name_length=_bounded_int(entry, "maxEventNameLength", where),
        client_events=entry.get("enableClientMessages", True) is not False)


def _rates(entry: Mapping[str, Any], where: str) -> RateLimits:
    return RateLimits(backend_events=_rate(entry, "maxBackendEventsPerSecond", where),
                      client_events=_rate(entry, "maxClientEventsPerSecond", where),
                      api_reads=_rate(entry, "maxReadRequestsPerSecond", where))


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise AppConfigError(f"{where} must be a string")
    return value


def parse_webhook(hook: Any, where: str) -> Webhook:
    if not isinstance(hook, dict):
        raise AppConfigError(f"{where} must be an object")
    unknown = sorted(set(hook) - {"url", "event_types", "filter", "headers"})
    if unknown:
        raise AppConfigError(f"{where}: unknown key(s) {unknown}")
    url = _text(hook.get("url"), f"{where}.url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AppConfigError(f"{where}.url must be an http(s) URL, not {url!r}")
    types = hook.get("event_types", list(WEBHOOK_EVENT_TYPES))
    if not isinstance(types, list) or not types or any(
            t not in WEBHOOK_EVENT_TYPES for t in types):
        raise AppConfigError(f"{where}.event_types must be a list of "
                             f"{list(WEBHOOK_EVENT_TYPES)}")
    flt = hook.get("filter") or {}
    if not isinstance(flt, dict) or set(flt) - {"channel_name_starts_with",
                                                 "channel_name_ends_with"}:
        raise AppConfigError(f"{where}.filter takes channel_name_starts_with and "
                             "channel_name_ends_with")
    headers = hook.get("headers") or {}
    if not isinstance(headers, dict) or len(headers) > MAX_WEBHOOK_HEADERS or not all(
            isinstance(k, str) and isinstance(v, str) and "\n" not in k + v and "\r" not in k + v
            for k, v in headers.items()):
        raise AppConfigError(f"{where}.headers must be an object of at most "
                             f"{MAX_WEBHOOK_HEADERS} string values without line breaks")
    return Webhook(url=url, event_types=frozenset(types),
                   starts_with=_text(flt.get("channel_name_starts_with", ""),
                                     f"{where}.filter.channel_name_starts_with"),
                   ends_with=_text(flt.get("channel_name_ends_with", ""),
                                   f"{where}.filter.channel_name_ends_with"),
                   headers=tuple(headers.items()))


def _webhooks(entry: Mapping[str, Any], secret: str, where: str) -> tuple[Webhook, ...]:
    hooks = entry.get("webhooks")
    if hooks is None:
        return ()
    if not isinstance(hooks, list):
        raise AppConfigError(f"{where}.webhooks must be a list")
    if not secret:
        raise AppConfigError(f"{where} has webhooks but no `secret` to sign them with "
                             "(Pusher's app secret)")
    return tuple(parse_webhook(hook, f"{where}.webhooks[{number}]")
                 for number, hook in enumerate(hooks))


def _origins(entry: Mapping[str, Any], where: str) -> tuple[str, ...]:
    origins = entry.get("allowedOrigins") or []
    if not (isinstance(origins, list) and all(isinstance(o, str) for o in origins)):
        raise AppConfigError(f"{where}.allowedOrigins must be a list of origins")
    return tuple(o.rstrip("/") for o in origins)


def _activity_timeout(entry: Mapping[str, Any], where: str) -> float:
    return _non_negative(entry.get("activityTimeoutMs") or 0,
                         f"{where}.activityTimeoutMs must be milliseconds") / 1000


def _socketio(entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``hosts`` (names, without a port), ``socketioPath`` (socket.io's ``path`` option),
    ``authHost`` (an http(s) URL) and ``authEndpoint``, as the top-level options of the same
    names say them."""
    hosts = host_names(entry.get("hosts") or [])
    if hosts is None:
        raise AppConfigError(f"{where}.hosts must be a list of at most {MAX_HOSTS} host names "
                             "(without a port)")
    path = entry.get("socketioPath") or ""
    if path:
        path = path.rstrip("/") if isinstance(path, str) else path
        problem = path_problem(path)
        if problem is not None:
            raise AppConfigError(f"{where}.socketioPath {problem}")
    auth_host = entry.get("authHost") or ""
    parts = urlsplit(auth_host) if isinstance(auth_host, str) else None
    if auth_host and (parts is None or parts.scheme not in ("http", "https")
                      or not parts.hostname):
        raise AppConfigError(f"{where}.authHost must be an http(s) URL")
    endpoint = entry.get("authEndpoint", "/broadcasting/auth")
    if not isinstance(endpoint, str) or not endpoint.startswith("/"):
        raise AppConfigError(f"{where}.authEndpoint must be a path")
    return {"hosts": hosts, "socketio_path": path, "auth_host": auth_host.rstrip("/"),
            "auth_endpoint": endpoint}


def _rules(entry: Mapping[str, Any], where: str) -> tuple[ChannelRule, ...]:
    section = entry.get("channels")
    if section is None:
        return ()
    if not isinstance(section, dict):
        raise AppConfigError(f"{where}.channels must be an object of channel rules")
    try:
        return tuple(parse_rules(section))
    except RuleConfigError as error:
        raise AppConfigError(f"{where}.{error}") from None


def _identity(entry: Mapping[str, Any], where: str, legacy: bool) -> tuple[str, str]:
    app_id = entry.get("appId", entry.get("id"))
    key = entry.get("key")
    if not app_id or not isinstance(key, str) or not key or (
            not legacy and not isinstance(app_id, str | int)):
        raise AppConfigError(
            f"`{where}` needs an `appId` and a `key` (a non-empty string); "
            "an API client without a key can never be used: add its key "
            "(`echo-server client:add <appId>` makes one), or remove the entry")
    for name in ("secret", "apiKey") if legacy else ("secret", "apiKey", "name"):
        if name in entry and not (isinstance(entry[name], str) and entry[name]):
            raise AppConfigError(f"`{where}.{name}` must be a non-empty string")
    if not legacy and "enabled" in entry and not isinstance(entry["enabled"], bool):
        raise AppConfigError(f"`{where}.enabled` must be true or false")
    if not legacy and str(app_id) in RESERVED_IDS:
        raise AppConfigError(
            f"`{where}.appId` {str(app_id)!r} is reserved: /metrics labels the default app "
            f"{DEFAULT_APP_LABEL!r} and the apps past its labelled ones {OTHER_APPS_LABEL!r}; "
            "choose another id")
    return str(app_id), key


def parse_app(entry: Any, where: str, *, legacy: bool = False) -> App:
    """One entry as an App, or AppConfigError naming ``where`` (``clients[0]``, ``apps[2]``).

    ``legacy``: a laravel-echo-server ``clients`` entry. It needs no secret (without one it
    is an API client of the unsigned API), its unknown keys are ignored as the reference
    ignores them, and, as before, its Pusher options are read only when it is a Pusher app
    (has a secret), under the name ``clients[<key>]``."""
    if not isinstance(entry, dict):
        if legacy:  # as laravel-echo-server's own check words it
            _identity({}, where, legacy)
        raise AppConfigError(f"`{where}` must be an object")
    app_id, key = _identity(entry, where, legacy)
    secret = entry.get("secret") or ""
    if not legacy:
        unknown = sorted(set(entry) - APP_KEYS)
        if unknown:
            raise AppConfigError(f"`{where}`: unknown key(s) {unknown}; known: "
                                 f"{sorted(APP_KEYS)}")
        if not secret:
            raise AppConfigError(f"`{where}` needs a `secret` (a non-empty string): an app "
                                 "signs its clients, its HTTP API and its webhooks with it")
    hooks = _webhooks(entry, secret, where)
    options: dict[str, Any] = {}
    if secret or not legacy:
        named = f"clients[{key}]" if legacy else where
        options = {"limits": _limits(entry, named), "rates": _rates(entry, named),
                   "allowed_origins": _origins(entry, named),
                   "activity_timeout": _activity_timeout(entry, named),
                   "channel_rules": _rules(entry, named)}
    if not legacy:
        options.update(_socketio(entry, where))
    return App(id=app_id, key=key, secret=secret, name=str(entry.get("name") or app_id),
               enabled=entry.get("enabled", True) is not False, api_key=entry.get("apiKey"),
               webhooks=hooks, tag="" if legacy else tag_of(app_id), **options)


def parse_apps(entries: Any, section: str, *, legacy: bool = False) -> list[App]:
    """Every entry of a ``clients`` or ``apps`` list, in order."""
    if not isinstance(entries, list):
        raise AppConfigError(f"`{section}` must be a list of {{appId, key}} objects")
    return [parse_app(entry, f"{section}[{index}]", legacy=legacy)
            for index, entry in enumerate(entries)]


def check_unique(apps: Sequence[App], others: Sequence[App] = ()) -> None:
    """Two apps with one key (or one id) would make a lookup pick either: refused, among
    ``apps`` and between them and ``others`` (which may repeat themselves, as the legacy
    ``clients`` may)."""
    for attribute in ("key", "id"):
        seen = {getattr(app, attribute) for app in others}
        for app in apps:
            value = getattr(app, attribute)
            if value in seen:
                raise AppConfigError(f"two apps have the {attribute} {value!r}")
            seen.add(value)
    claimed: set[str] = set()
    for app in apps:  # a Socket.IO endpoint leads to one app
        for name, value in [*(("host", host) for host in app.hosts),
                            *((("socketioPath", app.socketio_path),) if app.socketio_path
                              else ())]:
            if value in claimed:
                raise AppConfigError(f"two apps have the {name} {value!r}")
            claimed.add(value)
