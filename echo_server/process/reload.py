"""SIGHUP (and `echo-server reload`): read the configuration again and apply what can change
without closing a connection.

Applied live: API clients and keys, the file's `apps` (Pusher apps and their secrets too),
the webhook endpoints of the clients, JWT settings and keys, local channel rules, the auth
host and everything about the `/broadcasting/auth` callback and its cache, the origin
allow-list (for Pusher's `/app/{key}` too), the Pusher keep-alive's timeouts, the metrics
token, `health`, and the log level (`devMode`) and format. Connections that are open stay
open under what admitted them (a socket verified with the old JWT key keeps its session until
it reconnects); what is asked from now on meets the new settings: a Pusher connection's
signatures meet its app's secret of now, its pings and pong wait the timeouts of now, and the
connections of an app removed are closed with 4001.

Everything else (port, host, TLS files, sources, Redis, limits, ...) needs a restart: it is
named in the log and not applied at all, never half. A file that cannot be used is refused
whole, with the error in the log, and the running configuration stays; so is one that lacks
what the running configuration sets (`lost_settings`): a reload never falls back to a
default. Secrets never reach the log: changes are named by their keys, not their values.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from channel_auth import ChannelAuthorizer
from channel_auth.jwt_auth import JwtAuthenticator

from ..adapters.protocols import Served
from ..apps.authorizers import callback_grace
from ..apps.model import App
from ..apps.store import StaticStore
from ..config import Config, ConfigError, load_config
from ..core.channels import ChannelCore
from ..core.tasks import cancel_tasks, close_later
from ..web.health import Health, Phase
from ..webhooks.dispatcher import Webhooks
from . import logformat

log = logging.getLogger("echo_server.reload")

# Keys of laravel-echo-server.json (a section's key as `section.key`) applied live; a key
# named alone covers its whole section.
LIVE_KEYS = frozenset({
    "clients", "apps", "jwt", "channels", "authHost", "authEndpoint", "authVerifyTls",
    "authTimeout", "authCacheTtl", "authMaxConnections", "authMaxConnectionsPerAddress",
    "authMaxPendingPerAddress", "authQueueTimeout", "socketio.origins", "metrics.token",
    "health", "devMode", "log.format", "pusher.activityTimeoutMs", "pusher.pongTimeoutMs",
})
LIVE_ENVIRONMENT = ("ECHO_JWT_", "ECHO_LOG_FORMAT")
# Objects of the file whose keys are names (channel patterns, header names), not settings:
# one dropped there is an edit, not a lost setting.
NAMED_ENTRIES = frozenset({"channels", "headers"})
# The variables the configuration reads (a `.env` can lose them between two reloads).
READ_ENVIRONMENT = ("ECHO_", "LARAVEL_ECHO_SERVER_", "REVERB_")
_MISSING = object()


class Reloadable(Protocol):
    """What a reload touches in the running server (``server.EchoServer``)."""
    config: Config
    dev_client: dict[str, str] | None
    authorizer: ChannelAuthorizer
    authenticator: JwtAuthenticator | None
    core: ChannelCore
    protocols: tuple[Served, ...]
    file_apps: StaticStore
    webhooks: Webhooks
    health: Health


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The keys whose value differs, one level into sections present as objects in both."""
    changed: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        before, after = old.get(key, _MISSING), new.get(key, _MISSING)
        if before == after:
            continue
        if not prefix and isinstance(before, dict) and isinstance(after, dict):
            changed += changed_keys(before, after, f"{key}.")
        else:
            changed.append(prefix + str(key))
    return changed


def changed_environment(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """`ECHO_*` variables that differ (the process environment is fixed, `.env` is not)."""
    return sorted(name for name in set(old) | set(new)
                  if name.startswith("ECHO_") and old.get(name) != new.get(name))


def set_keys(options: Mapping[str, Any] | None) -> set[str]:
    """What a file sets: its keys, and `section.key` inside the objects of settings."""
    keys: set[str] = set()
    for key, value in (options or {}).items():
        keys.add(key)
        if isinstance(value, dict) and key not in NAMED_ENTRIES:
            keys.update(f"{key}.{inner}" for inner in value)
    return keys


def lost_settings(old: Config, new: Config, dev_client: Mapping[str, str] | None) -> list[str]:
    """What the running configuration sets and the new one lacks, which a reload would
    otherwise replace by its default: the file itself; a key of the file (a section's key
    too, while the section is still an object: `"jwt": false` turns JWT off, `{}` does not);
    the last API client (the generated development client, `dev_client`, does not count);
    a variable of `READ_ENVIRONMENT` (a `.env` that lost it; set empty, it was unset on
    purpose)."""
    if old.from_file and not new.from_file:
        return ["the file itself"]
    new_options = new.file_options or {}
    gone = set_keys(old.file_options) - set_keys(new_options)
    lost: list[str] = []
    for key in sorted(gone):
        # A section gone is named alone; one now `false` or `null` was written on purpose.
        section, dot, _ = key.partition(".")
        if not dot or (section not in gone and isinstance(new_options.get(section), dict)):
            lost.append(key)
    dev_key = (dev_client or {}).get("key")
    if "clients" not in lost and not new.apps and any(app.key != dev_key for app in old.apps):
        lost.append("clients (none left)")
    lost += sorted(name for name, value in old.environ.items()
                   if name.startswith(READ_ENVIRONMENT) and value.strip()
                   and name not in new.environ)
    return lost


def is_live(key: str) -> bool:
    if key.startswith("ECHO_"):
        return key.startswith(LIVE_ENVIRONMENT)
    return key in LIVE_KEYS or key.partition(".")[0] in LIVE_KEYS


def _auth_settings(config: Config) -> tuple[Any, ...]:
    """What `build_authorizer` reads: the chain is rebuilt only when one of these changes,
    so an unrelated reload keeps the auth cache and the warm connection pool."""
    return (config.auth_hosts, config.auth_endpoint, config.auth_verify_tls,
            config.auth_timeout, config.auth_cache_ttl, config.auth_max_connections,
            config.auth_max_connections_per_address, config.auth_max_pending_per_address,
            config.auth_queue_timeout, config.raw.get("channels"))


class Reloader:
    def __init__(self, server: Reloadable,
                 build_authorizer: Callable[[Config], ChannelAuthorizer],
                 load: Callable[[], Config] | None = None) -> None:
        self.server = server
        self.build_authorizer = build_authorizer
        # The CLI passes how it loaded the file (`--config`, `--dir`, `--dev`).
        self.load = load or (lambda: load_config(server.config.config_file))
        # Held while the server starts, so a reload asked for meanwhile waits for it.
        self.lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    def request(self) -> None:
        """From the SIGHUP handler: reload in a task of its own."""
        self._keep(asyncio.ensure_future(self.reload()))

    async def reload(self) -> bool:
        """True when the file was read and applied (what needs a restart is logged)."""
        async with self.lock:
            server = self.server
            if server.health.phase is Phase.DRAINING:
                log.warning("configuration reload ignored: the server is shutting down")
                return False
            old = server.config
            try:
                if old.from_file and not os.path.exists(old.config_file):
                    raise ConfigError(f"{old.config_file} does not exist, and a reload never "
                                      "falls back to the defaults")
                new = self.load()
                lost = lost_settings(old, new, server.dev_client)
                if lost:
                    raise ConfigError(
                        f"{new.config_file} lacks what the running configuration sets: "
                        f"{', '.join(lost)}; a reload never falls back to a default: to "
                        "change a setting, write its new value")
                authorizer = (self.build_authorizer(new)
                              if _auth_settings(new) != _auth_settings(old) else None)
                authenticator = server.authenticator
                if new.jwt != old.jwt:
                    authenticator = JwtAuthenticator(new.jwt) if new.jwt is not None else None
                endpoints = new.webhook_endpoints  # a malformed one refuses the whole file
                self._keep_dev_client(new)  # before its apps are read: it is one of them
                apps = new.apps
                # Each protocol reads what it takes of the new settings (`channels` too).
                protocols = [served.reconfigure(new) for served in server.protocols]
            except (ConfigError, ValueError, OSError) as error:  # RuleConfigError too
                log.error("configuration reload refused, the running configuration stays: "
                          "%s", error)
                return False
            changed = (changed_keys(old.raw, new.raw)
                       + changed_environment(old.environ, new.environ))
            replaced: list[tuple[Any, float]] = []
            if authorizer is not None:
                # Requests in flight finish on the old chain (its pool), at most this late.
                replaced.append((server.authorizer, callback_grace(old)))
            if server.authenticator not in (None, authenticator):
                # A JWKS fetch in flight finishes first.
                replaced.append((server.authenticator, old.jwt.jwks_timeout if old.jwt else 0))
            self._apply(new, authorizer, authenticator, protocols, apps)
            server.webhooks.reconfigure(endpoints)
            for closable, grace in replaced:
                self._keep(asyncio.ensure_future(close_later(closable, grace)))
            applied = [key for key in changed if is_live(key)]
            restart = [key for key in changed if not is_live(key)]
            log.info("configuration reloaded from %s: %s", new.config_file,
                     "applied " + ", ".join(applied) if applied else "no live setting changed")
            if restart:
                log.warning("configuration reload: not applied, needs a restart: %s; the "
                            "server keeps running with the previous value", ", ".join(restart))
            return True

    def _apply(self, new: Config, authorizer: ChannelAuthorizer | None,
               authenticator: JwtAuthenticator | None, protocols: list[Callable[[], None]],
               apps: list[App]) -> None:
        """Only attribute swaps, after everything that could fail is built: nothing awaits
        between the first and the last, so no request sees half of the new settings."""
        server, old = self.server, self.server.config
        if authorizer is not None:
            server.authorizer = authorizer
        server.authenticator = authenticator
        server.core.authorize_with(server.authorizer, authenticator)
        for apply in protocols:  # the origin allow-list, Pusher's rules and socket ids...
            apply()
        # Open Pusher connections follow their app as it is now (closed when it is gone).
        server.file_apps.replace(apps)
        server.health.check_timeout = new.health_check_timeout
        if (new.log_format, new.dev_mode) != (old.log_format, old.dev_mode):
            logformat.configure(new.log_format, logging.DEBUG if new.dev_mode else logging.INFO)
        # The metrics token, the status page's keys and drainDelay are read from here.
        server.config = new

    def _keep_dev_client(self, new: Config) -> None:
        """A file whose default app still has no client (no `clients` entry, no Reverb
        `.env`: isolated apps are not its clients) keeps this run's development client (its
        key may be in use); one that lost its last client was refused (`lost_settings`)."""
        dev_client = self.server.dev_client
        if dev_client is not None and all(app.isolated for app in new.apps):
            new.raw["clients"] = [dict(dev_client)]

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """At shutdown: close whatever still waits to be closed, now."""
        await cancel_tasks(self._tasks)

