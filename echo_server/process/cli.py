"""`echo-server`: the reference's command line (`start`, `stop`, `init`, `client:add`,
`client:remove`) so existing supervisor units, Dockerfiles and scripts keep working, plus
`install-client` to fetch the socket.io-client bundle the server hands to browsers, `demo`
to run the lead-management demo page with its backend, and `apps:*` on the apps store
(docs/apps.md; the work is the store's, here only arguments and output).

About 900 lines because every command keeps the reference's flags, prompts and messages, each
in one function beside the lock file and config handling they share.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from echo_server import config as cfg
from echo_server.apps.endpoints import BUNDLE
from echo_server.apps.file_store import editing
from echo_server.apps.store import AppStoreError
from echo_server.process import lockfile, logformat
from echo_server.process.settings import parse_port, parse_worker_ports, parse_workers
from echo_server.web import PACKAGE_STATIC

logger = logging.getLogger("echo_server.cli")

SOCKET_IO_CLIENT_VERSION = "2.5.0"

# The answers the reference's `configure` suggests for CORS.
CORS_ORIGIN = "http://localhost:80"
CORS_METHODS = "GET, POST"
CORS_HEADERS = (
    "Origin, Content-Type, X-Auth-Token, X-Requested-With, Accept, Authorization, "
    "X-CSRF-TOKEN, X-Socket-Id"
)


class CliError(Exception):
    """A failure explained to the operator; `main` prints it and exits 1."""


# --------------------------------------------------------------------------- logging


def configure_logging(dev: bool = False, log_format: str = "text") -> None:
    """One record per line on stderr (compact text, or JSON for log pipelines); dev mode
    shows the debug chatter."""
    logformat.configure(log_format, logging.DEBUG if dev else logging.INFO)


# --------------------------------------------------------------------------- start / stop


def _exit_on_signal(signum: int, _frame: Any) -> NoReturn:
    raise SystemExit(128 + signum)


def _install_exit_signals() -> None:
    """Until the server installs its own handlers, SIGTERM must still run `finally` (and so
    release the lock), as the reference's `process.on('SIGTERM', exit)` does. SIGHUP means
    reload: before the server runs, the file was just read, so it is ignored."""
    signal.signal(signal.SIGTERM, _exit_on_signal)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def cmd_start(args: argparse.Namespace) -> int:
    """Load the config, take the lock, run the server until it is told to stop.

    The server itself makes up (and prints) a development API client when none is configured.
    """
    # Before loading, so config warnings are formatted like the rest.
    configure_logging(args.dev, cfg.early_log_format(args.config, args.dir))
    config = cfg.load_config(args.config, args.dir, dev=args.dev)
    if config.dev_mode:
        logging.getLogger().setLevel(logging.DEBUG)
    try:
        workers = parse_workers(args.workers) if args.workers else config.workers
    except ValueError as error:
        raise CliError(f"--workers: {error}") from None
    ports_setting = args.worker_ports or config.worker_ports
    try:
        worker_ports = parse_worker_ports(ports_setting, workers) if ports_setting else None
    except ValueError as error:
        raise CliError(f"--worker-ports: {error}") from None
    if worker_ports and workers == 1:
        logger.warning("workerPorts is ignored with one worker: list port %d itself in the "
                       "proxy's upstream", config.port)
    lock = lockfile.lock_path_for(config.config_file)
    lockfile.acquire(lock, force=args.force)
    _install_exit_signals()
    try:
        from echo_common import jsoncodec
        from echo_server.process.server import _loop_factory, run

        # The fast paths are platform-dependent dependencies: say which ones this process got.
        loop = "uvloop" if _loop_factory() is not None else "asyncio (standard library)"
        logger.info("JSON: %s; event loop: %s", jsoncodec.implementation(), loop)
        def load() -> cfg.Config:
            return cfg.load_config(args.config, args.dir, dev=args.dev)

        if workers > 1:
            from echo_server.process.workers import run_workers

            return run_workers(config, workers, lambda worker_config, worker: run(
                worker_config, load, worker=worker), worker_ports)
        return run(config, load=load)
    except KeyboardInterrupt:
        return 130
    finally:
        lockfile.release(lock)


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop the server named in the lock file and wait until it has gone."""
    path = cfg.resolve_config_path(args.config, args.dir)
    print(lockfile.stop(lockfile.lock_path_for(path), timeout=args.timeout))
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    """SIGHUP to the server named in the lock file. The file is not checked here: the server
    reads it with its own environment, and logs what it applied or why it refused it."""
    path = cfg.resolve_config_path(args.config, args.dir)
    pid = lockfile.signal_owner(lockfile.lock_path_for(path), signal.SIGHUP)
    print(f"Asked echo-server (process {pid}) to reload {path}: its log says what was "
          "applied, what needs a restart, or why the file was refused.")
    return 0


# --------------------------------------------------------------------------- status


STATUS_TIMEOUT = 5.0


# Channel names and errors come from users: never let them drive the terminal.
_printable = logformat.printable


def _status_url(config: cfg.Config) -> str:
    """The running server's `/status.json`, over loopback unless it listens elsewhere only."""
    host = config.host or ""
    if host in ("", "0.0.0.0", "::", "*"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    scheme = "https" if config.protocol == "https" else "http"
    return f"{scheme}://{host}:{config.port}/status.json"


def _status_credential(config: cfg.Config) -> str:
    for app in config.apps:
        if app.unsigned_key:
            return app.unsigned_key
    if config.metrics_token:
        return config.metrics_token
    raise CliError(
        "no API client key or metrics.token in the config: the status page needs one "
        "(add a client with `echo-server client:add`)"
    )


def fetch_status(config: cfg.Config) -> tuple[str, dict[str, Any]]:
    """GET `/status.json` from the server this config describes; CliError when it is not there.

    TLS is verified against the system CAs unless `authVerifyTls` is false (the same switch
    that trusts a self-signed auth host trusts a self-signed server here).
    """
    import ssl
    import urllib.error
    import urllib.request

    url = _status_url(config)
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {_status_credential(config)}",
                      "Accept": "application/json"})
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context()
        if not config.auth_verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    base = url.rsplit("/", 1)[0]
    try:
        with urllib.request.urlopen(request, timeout=STATUS_TIMEOUT, context=context) as answer:
            body = answer.read()
    except urllib.error.HTTPError as error:
        if error.code == 403:
            raise CliError(f"the server at {base} refused the configured key "
                           "(was the config changed since it started?)") from None
        if error.code == 404:
            raise CliError(f"{base} answers but has no /status.json: another program, or an "
                           "older echo-server, holds the port") from None
        raise CliError(f"{url} answered HTTP {error.code}") from None
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, ConnectionRefusedError):
            raise CliError(f"echo-server is not running at {base} (connection refused)") from None
        if isinstance(reason, ssl.SSLError):
            raise CliError(f"TLS with {base} failed: {reason}; set authVerifyTls to false to "
                           "accept a self-signed certificate") from None
        raise CliError(f"echo-server does not answer at {base}: {reason}") from None
    except (TimeoutError, OSError) as error:
        raise CliError(f"echo-server does not answer at {base}: {error}") from None
    try:
        data = json.loads(body)
    except ValueError:
        raise CliError(f"{url} did not answer JSON") from None
    if not isinstance(data, dict):
        raise CliError(f"{url} did not answer a JSON object")
    return base, data


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {s}s" if minutes else f"{s}s"


def format_status(base: str, data: dict[str, Any]) -> str:
    """The status page's figures as terminal lines."""
    lines = [f"echo-server at {base} (instance {_printable(data.get('instance'))}, "
             f"up {_duration(float(data.get('uptime') or 0))})"]
    connections = data.get("connections", {})
    kinds = ", ".join(f"{k['protocol']} {k['transport']} {k['count']}"
                      for k in connections.get("byKind", []) if k.get("count"))
    lines.append(f"{'Connections':<14}{connections.get('total', 0)}"
                 + (f"  ({kinds})" if kinds else ""))
    rates, totals = data.get("rates", {}), data.get("totals", {})
    lines.append(f"{'Messages/s':<14}{rates.get('messagesPerSecond', 0):.1f}"
                 f"  ({totals.get('delivered', 0):,} delivered)")
    lines.append(f"{'Events/s':<14}{rates.get('eventsPerSecond', 0):.1f}"
                 f"  ({totals.get('events', 0):,} received)")
    channels = data.get("channels", {})
    lines.append(f"{'Channels':<14}{channels.get('total', 0)}"
                 f"  ({channels.get('subscriptions', 0)} subscriptions)")
    top = channels.get("top", [])
    width = max([len(_printable(c["name"])) for c in top] + [20])
    lines += [f"  {_printable(c['name']):<{width}}  {c['subscribers']}" for c in top]
    if channels.get("total", 0) > len(top):
        lines.append(f"  ... and {channels['total'] - len(top)} more")
    presence = data.get("presence", {})
    lines.append(f"{'Presence':<14}{presence.get('memberships', 0)} members in "
                 f"{presence.get('channels', 0)} channels")
    lines += [f"  {_printable(p['name']):<{width}}  {p['members']} members "
              f"({p['subscribers']} sockets)" for p in presence.get("top", [])]
    errors = data.get("errors", {})
    lines.append(f"{'Errors':<14}{sum(errors.values())}")
    lines += [f"  {_printable(kind):<{width}}  {count}" for kind, count in errors.items()]
    lines.append("Sources")
    for source in data.get("sources", []):
        state = "connected" if source.get("connected") else "DOWN"
        line = (f"  {_printable(source.get('kind')):<8}{_printable(source.get('url'))}  {state}, "
                f"{source.get('events', 0):,} events, {source.get('outages', 0)} outages")
        if source.get("lastError"):
            line += f", last error: {_printable(source['lastError'])}"
        lines.append(line)
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    """Ask the running server (found through the config, as `stop` finds it) for its figures."""
    config = cfg.load_config(args.config, args.dir)
    base, data = fetch_status(config)
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print(format_status(base, data))
    return 0


# --------------------------------------------------------------------------- config files


@contextlib.contextmanager
def _editing(path: str) -> Iterator[dict[str, Any]]:
    """The file as written (no defaults, no env), so an edit changes only what it must, and
    under the lock the `apps:*` commands take (``file_store.editing``).

    The reference re-saves its merged, env-overridden options; that would write secrets from
    the environment into the file and drop unknown keys.
    """
    try:
        with editing(path) as data:
            yield data
    except AppStoreError as error:
        raise CliError(str(error)) from None
    except OSError as error:
        raise CliError(f"cannot write {path}: {error}") from error


def _write_json(path: str, data: dict[str, Any], indent: str | int = "\t") -> None:
    """Write in place: a bind-mounted config file cannot be replaced by a rename."""
    text = json.dumps(data, indent=indent, ensure_ascii=False) + "\n"
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as error:
        raise CliError(f"cannot write {path}: {error}") from error


def _print_client(client: dict[str, Any]) -> None:
    print(f"appId: {client['appId']}")
    print(f"key: {client['key']}")


def cmd_client_add(args: argparse.Namespace) -> int:
    """Add an API client, or give an existing appId a new key, as the reference does."""
    path = cfg.resolve_config_path(args.config, args.dir)
    with _editing(path) as data:
        clients = data.get("clients")
        if not isinstance(clients, list):
            data["clients"] = clients = []
        app_id = args.app_id or cfg.generate_app_id()
        client = next(
            (c for c in clients if isinstance(c, dict) and str(c.get("appId")) == app_id), None
        )
        if client is None:
            client = {"appId": app_id, "key": cfg.generate_key()}
            clients.append(client)
            added = True
        else:
            client["key"] = cfg.generate_key()
            added = False
    print("API Client added!" if added else "API Client updated!")
    _print_client(client)
    return 0


def cmd_client_remove(args: argparse.Namespace) -> int:
    """Remove one client by appId (the reference, given none, removes the last one: we don't)."""
    path = cfg.resolve_config_path(args.config, args.dir)
    with _editing(path) as data:
        clients = data.get("clients")
        if not isinstance(clients, list):
            clients = []
        ids = [str(c.get("appId")) for c in clients if isinstance(c, dict)]
        if not args.app_id:
            raise CliError("give the appId to remove; configured: "
                           + (", ".join(ids) or "none"))
        kept = [c for c in clients
                if not (isinstance(c, dict) and str(c.get("appId")) == args.app_id)]
        if len(kept) == len(clients):
            raise CliError(f"no client with appId {args.app_id} in {path}")
        data["clients"] = kept
    print(f"Client removed: {args.app_id}")
    return 0


# --------------------------------------------------------------------------- apps


def _apps_config(args: argparse.Namespace) -> cfg.Config:
    # Only the apps matter here: the config's notices are for `start`.
    logging.getLogger(cfg.logger.name).setLevel(logging.ERROR)
    return cfg.load_config(args.config, args.dir)


def _run_on_store(args: argparse.Namespace, work: Callable[[Any], Any]) -> Any:
    """``work(store)`` on the store that holds the apps (the database when configured, else
    the file), closed afterwards; a database's errors become one line for the operator."""
    import asyncio

    from echo_server.apps.manager import editing_store
    from echo_server.apps.model import AppConfigError

    config = _apps_config(args)
    store = editing_store(config.config_file, config.environ, config.app_manager)

    async def run() -> Any:
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (AppStoreError, AppConfigError) as error:
        raise CliError(str(error)) from None
    except Exception as error:  # the driver's own (asyncpg), or the database unreachable
        if type(error).__name__ == "UndefinedTableError":
            raise CliError(f"no apps table in the database: run `echo-server apps:migrate` "
                           f"first ({error})") from None
        raise CliError(f"the {store.kind} store failed: {type(error).__name__}: "
                       f"{error}") from None


def cmd_apps_migrate(args: argparse.Namespace) -> int:
    """Create (or bring up to date) the apps table and its NOTIFY trigger."""
    if _apps_config(args).app_manager is None:
        raise CliError("no database holds the apps (set appManager.driver to postgres, or "
                       "ECHO_APPS_DATABASE_URL); apps in laravel-echo-server.json need no "
                       "migration")

    async def migrate(store: Any) -> str:
        await store.migrate()
        return str(store.table)

    print(f"Apps table {_run_on_store(args, migrate)} is ready.")
    return 0


def cmd_apps_add(args: argparse.Namespace) -> int:
    """Add an app; what is not given is generated, and the secret is shown this once."""
    import secrets

    try:
        entry = json.loads(args.options) if args.options else {}
    except ValueError as error:
        raise CliError(f"--options is not JSON: {error}") from None
    if not isinstance(entry, dict):
        raise CliError("--options must be a JSON object of app options (docs/apps.md)")
    entry.update({
        # The Python `pusher` package accepts only numeric app ids.
        "appId": args.id or str(100_000_000 + secrets.randbelow(900_000_000)),
        "key": args.key or secrets.token_hex(10),
        "secret": args.secret or secrets.token_hex(20),
    })
    if args.name:
        entry["name"] = args.name
    if args.disabled:
        entry["enabled"] = False

    async def add(store: Any) -> Any:
        return await store.add(entry)

    app = _run_on_store(args, add)
    print("App added.")
    print(f"appId: {app.id}\nkey: {app.key}\nsecret: {app.secret}")
    print("Keep the secret now: apps:list never shows it.")
    return 0


def cmd_apps_list(args: argparse.Namespace) -> int:
    """The apps of the store, without their secrets."""

    async def listing(store: Any) -> list[Any]:
        return list(await store.all())

    apps = _run_on_store(args, listing)
    if args.json:
        print(json.dumps([{"appId": a.id, "key": a.key, "name": a.name, "enabled": a.enabled}
                          for a in apps], indent=2, ensure_ascii=False))
        return 0
    if not apps:
        print("No apps.")
        return 0
    width = max(len(_printable(a.id)) for a in apps)
    key_width = max(len(_printable(a.key)) for a in apps)
    for app in apps:
        state = "" if app.enabled else "  (disabled)"
        print(f"{_printable(app.id):<{width}}  {_printable(app.key):<{key_width}}  "
              f"{_printable(app.name)}{state}")
    return 0


def cmd_apps_remove(args: argparse.Namespace) -> int:
    async def remove(store: Any) -> bool:
        return bool(await store.remove(args.app_id))

    if not _run_on_store(args, remove):
        raise CliError(f"no app {args.app_id} in the apps store (a `clients` entry is "
                       "removed with client:remove)")
    print(f"App removed: {args.app_id}")
    return 0


# --------------------------------------------------------------------------- init


class Prompter:
    """Questions on the terminal; without one (or with --yes) every answer is its default."""

    def __init__(self, interactive: bool, ask: Callable[[str], str] = input) -> None:
        self.interactive = interactive
        self._ask = ask

    def text(self, question: str, default: str) -> str:
        if not self.interactive:
            return default
        try:
            answer = self._ask(f"{question} [{default}]: " if default else f"{question}: ")
        except EOFError:
            return default
        return answer.strip() or default

    def confirm(self, question: str, default: bool) -> bool:
        hint = "Y/n" if default else "y/N"
        while True:
            answer = self.text(f"{question} ({hint})", "").lower()
            if not answer:
                return default
            if answer in ("y", "yes", "n", "no"):
                return answer.startswith("y")

    def choose(self, question: str, choices: Sequence[str], default: str) -> str:
        while True:
            answer = self.text(f"{question} ({'/'.join(choices)})", default)
            if answer in choices:
                return answer


def laravel_prefix_hint(env: dict[str, str]) -> str:
    """Laravel's Redis prefix (`REDIS_PREFIX`, else `slug(APP_NAME, '_')_database_`).

    The classic set-up mistake is a keyPrefix that does not match it, so init suggests it.
    """
    if "REDIS_PREFIX" in env:  # set but empty means no prefix, as Laravel's env() reads it
        return env["REDIS_PREFIX"]
    if not env.get("APP_NAME"):
        return ""
    return re.sub(r"[^a-z0-9]+", "_", env["APP_NAME"].lower()).strip("_") + "_database_"


def _pick(flag: Any, ask: Callable[[], Any]) -> Any:
    """A flag given on the command line answers its question."""
    return ask() if flag is None else flag


def _init_listening(args: argparse.Namespace, ask: Prompter, options: dict[str, Any]) -> None:
    options["devMode"] = _pick(args.dev, lambda: ask.confirm("Run in development mode?", False))
    port = str(_pick(args.port, lambda: ask.text("Port to serve from", "6001")))
    try:
        parse_port(port)
    except ValueError as error:
        raise CliError(str(error)) from error
    options["port"] = int(port) if port.isdigit() else port
    if args.host is not None:
        options["host"] = args.host or None
    options["protocol"] = _pick(
        args.protocol, lambda: ask.choose("Serve on http or https?", ("http", "https"), "http")
    )
    if options["protocol"] == "https":
        options["sslCertPath"] = _pick(args.ssl_cert, lambda: ask.text("SSL cert file", ""))
        options["sslKeyPath"] = _pick(args.ssl_key, lambda: ask.text("SSL key file", ""))
    for flag, key in (("ssl_chain", "sslCertChainPath"), ("ssl_passphrase", "sslPassphrase")):
        if getattr(args, flag) is not None:
            options[key] = getattr(args, flag)
    # Connection-state recovery on for new set-ups (socket.io's default is off, because it
    # adds an offset argument to every event for socket.io-client >= 4.6: see the README).
    options["socketio"] = {"connectionStateRecovery": {"maxDisconnectionDuration": 120_000}}
    if args.origins is not None:
        options["socketio"]["origins"] = args.origins


def _init_auth(args: argparse.Namespace, ask: Prompter, options: dict[str, Any]) -> None:
    hosts = _pick(
        args.auth_host, lambda: ask.text("Host of your Laravel app (auth)", "http://localhost")
    )
    parts = [part.strip() for part in str(hosts).split(",") if part.strip()]
    options["authHost"] = parts[0] if len(parts) == 1 else parts
    if args.auth_endpoint is not None:
        options["authEndpoint"] = args.auth_endpoint


def _init_redis(
    args: argparse.Namespace, ask: Prompter, options: dict[str, Any], env: dict[str, str]
) -> None:
    options["database"] = _pick(
        args.database,
        lambda: ask.choose("Where to keep presence members?", ("redis", "sqlite"), "redis"),
    )
    subscribers = options["subscribers"]
    if args.http_api is not None:
        subscribers["http"] = args.http_api
    if args.redis_subscriber is not None:
        subscribers["redis"] = args.redis_subscriber
    redis: dict[str, Any] = options["databaseConfig"]["redis"]
    for flag, key in (("redis_host", "host"), ("redis_password", "password")):
        if getattr(args, flag) is not None:
            redis[key] = getattr(args, flag)
    for flag, key in (("redis_port", "port"), ("redis_db", "db")):
        if getattr(args, flag) is not None:
            redis[key] = getattr(args, flag)
    uses_redis = options["database"] == "redis" or subscribers["redis"]
    prefix = args.key_prefix
    if prefix is None and uses_redis:
        prefix = ask.text(
            "Redis prefix of Laravel's broadcasts (keyPrefix)", laravel_prefix_hint(env)
        )
    if prefix:
        redis["keyPrefix"] = prefix
    if args.publish_presence is not None:
        options["databaseConfig"]["publishPresence"] = args.publish_presence


def _init_api(args: argparse.Namespace, ask: Prompter, options: dict[str, Any]) -> None:
    if _pick(args.add_client, lambda: ask.confirm("Generate an API client id/key?", False)):
        client = {"appId": cfg.generate_app_id(), "key": cfg.generate_key()}
        options["clients"].append(client)
        _print_client(client)
    if _pick(args.cors, lambda: ask.confirm("Set up cross-domain access to the API?", False)):
        options["apiOriginAllow"] = {
            "allowCors": True,
            "allowOrigin": _pick(
                args.allow_origin, lambda: ask.text("Allowed origin", CORS_ORIGIN)
            ),
            "allowMethods": _pick(args.allow_methods, lambda: ask.text("Methods", CORS_METHODS)),
            "allowHeaders": _pick(args.allow_headers, lambda: ask.text("Headers", CORS_HEADERS)),
        }


def cmd_init(args: argparse.Namespace) -> int:
    """Write a config the reference could read too: its defaults plus the answers."""
    path = cfg.resolve_config_path(args.config, args.dir)
    if os.path.exists(path) and not args.force:
        raise CliError(f"{path} already exists; use --force to overwrite it")
    ask = Prompter(interactive=not args.yes and sys.stdin.isatty())
    env = cfg.effective_environ(None, os.getcwd())
    options = copy.deepcopy(cfg.DEFAULTS)
    _init_listening(args, ask, options)
    _init_auth(args, ask, options)
    _init_redis(args, ask, options, env)
    _init_api(args, ask, options)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _write_json(path, options)
    run = "echo-server start"
    if args.dir:
        run += f" --dir={args.dir}"
    if args.config != cfg.DEFAULT_CONFIG_FILE:
        run += f" --config={args.config}"
    print(f"Configuration file saved to {path}. Run `{run}` to run the server.")
    return 0


# --------------------------------------------------------------------------- install-client


def cmd_install_client(args: argparse.Namespace) -> int:
    """Fetch socket.io-client's browser bundle with npm; we do not ship third-party JS."""
    npm = shutil.which("npm")
    if npm is None:
        raise CliError("npm is not installed; install Node.js/npm, then run this again")
    package = f"socket.io-client@{args.version}"
    with tempfile.TemporaryDirectory(prefix="echo-server-client-") as tmp:
        command = [npm, "install", "--no-save", "--no-package-lock", "--no-audit", "--no-fund"]
        result = subprocess.run([*command, "--prefix", tmp, package], check=False)
        if result.returncode != 0:
            raise CliError(f"npm install {package} failed (exit {result.returncode})")
        dist = Path(tmp, "node_modules", "socket.io-client", "dist")
        dest = Path(args.dest)
        dest.mkdir(parents=True, exist_ok=True)
        for name in BUNDLE:
            if not (dist / name).is_file():
                raise CliError(f"{package} has no dist/{name}")
            shutil.copyfile(dist / name, dest / name)
    print(f"Installed {package} into {dest}")
    return 0


# --------------------------------------------------------------------------- publish


def _publish_url(config: cfg.Config) -> str:
    """The config's first Redis source (what Laravel would publish to), else its first
    source another process can reach."""
    from broadcaster.sources import url_scheme

    urls = [url for url in config.source_urls if url_scheme(url) != "memory"]
    redis = [url for url in urls if url_scheme(url).startswith(("redis", "unix"))]
    if not (redis or urls):
        raise CliError("the config has no source to publish to (no Redis, no `sources`); "
                       "give one with --source URL")
    return (redis or urls)[0]


def cmd_publish(args: argparse.Namespace) -> int:
    """Publish one event as the Laravel app (or a service using `broadcaster`) would."""
    import asyncio

    from broadcaster import Broadcaster
    from broadcaster.sources.base import display_url

    try:
        data = json.loads(args.data)
    except json.JSONDecodeError as error:
        raise CliError(f"the event data is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise CliError("the event data must be a JSON object (Laravel's broadcastWith() array)")
    options: dict[str, Any] = {}
    if args.source:
        url = args.source
    else:
        # Only the source matters here: the config's notices are for `start`.
        logging.getLogger(cfg.logger.name).setLevel(logging.ERROR)
        config = cfg.load_config(args.config, args.dir)
        url = _publish_url(config)
        options["key_prefix"] = config.key_prefix

    async def publish() -> None:
        async with Broadcaster(url, **options) as broadcaster:
            await broadcaster.publish(args.channel, args.event, data, socket=args.socket)

    try:
        asyncio.run(publish())
    except (OSError, ValueError) as error:
        raise CliError(f"publishing to {display_url(url)} failed: {error}") from None
    except Exception as error:  # the driver's own errors (redis, asyncpg)
        raise CliError(f"publishing to {display_url(url)} failed: "
                       f"{type(error).__name__}: {error}") from None
    print(f"Published {args.event} on {args.channel} via {display_url(url)}")
    return 0


# --------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    """The seed's lead-management page with its backend, on this machine (see demo/app.py)."""
    import asyncio

    from echo_server.demo.app import run_demo

    try:
        return asyncio.run(run_demo(host=args.host, port=args.port,
                                    backend_port=args.backend_port, redis_url=args.redis,
                                    token_ttl=args.token_ttl))
    except KeyboardInterrupt:
        return 130


# --------------------------------------------------------------------------- parser


def _add_location(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=cfg.DEFAULT_CONFIG_FILE, help="config file name or path"
    )
    parser.add_argument("--dir", default=None, help="directory holding the config file")


def _bool_flag(parser: argparse.ArgumentParser, name: str, help_text: str) -> None:
    parser.add_argument(name, action=argparse.BooleanOptionalAction, default=None, help=help_text)


def _add_init_parser(subparsers: Any) -> None:
    init = subparsers.add_parser(
        "init", aliases=["configure"], help="write a config file (asks, or takes flags)"
    )
    _add_location(init)
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.add_argument("-y", "--yes", action="store_true", help="ask nothing, use flags/defaults")
    _bool_flag(init, "--dev", "development mode (more logging)")
    init.add_argument("--host", help="listen address (default: all interfaces)")
    init.add_argument("--port", help="listen port (default 6001)")
    init.add_argument("--protocol", choices=("http", "https"))
    init.add_argument("--ssl-cert", help="certificate file for https")
    init.add_argument("--ssl-key", help="private key file for https")
    init.add_argument("--ssl-chain", help="certificate chain file for https")
    init.add_argument("--ssl-passphrase", help="passphrase of the key")
    init.add_argument("--auth-host", help="Laravel app URL(s), comma-separated")
    init.add_argument("--auth-endpoint", help="default /broadcasting/auth")
    init.add_argument("--database", choices=("redis", "sqlite"), help="presence store")
    init.add_argument("--redis-host")
    init.add_argument("--redis-port", type=int)
    init.add_argument("--redis-password")
    init.add_argument("--redis-db", type=int)
    init.add_argument("--key-prefix", help="Laravel's Redis prefix, e.g. laravel_database_")
    _bool_flag(init, "--publish-presence", "publish presence changes to Redis")
    _bool_flag(init, "--http-api", "accept events by HTTP POST (subscribers.http)")
    _bool_flag(init, "--redis-subscriber", "accept events from Redis (subscribers.redis)")
    _bool_flag(init, "--add-client", "generate an API client id and key")
    _bool_flag(init, "--cors", "send CORS headers on the HTTP API")
    init.add_argument("--allow-origin")
    init.add_argument("--allow-methods")
    init.add_argument("--allow-headers")
    init.add_argument("--origins", help="socket.io origin allow-list, e.g. 'example.com:443'")
    init.set_defaults(handler=cmd_init)


def _add_apps_parsers(subparsers: Any) -> None:
    migrate = subparsers.add_parser(
        "apps:migrate", help="create the apps table of the configured database")
    _add_location(migrate)
    migrate.set_defaults(handler=cmd_apps_migrate)
    add = subparsers.add_parser("apps:add", help="add an app (generates what is not given)")
    add.add_argument("--id", default=None, help="app id (default: 9 random digits)")
    add.add_argument("--key", default=None, help="public key (default: random)")
    add.add_argument("--secret", default=None, help="secret (default: random)")
    add.add_argument("--name", default=None)
    add.add_argument("--disabled", action="store_true", help="add it disabled")
    add.add_argument("--options", default=None, metavar="JSON",
                     help='other options, e.g. \'{"maxConnections": 100}\' (docs/apps.md)')
    _add_location(add)
    add.set_defaults(handler=cmd_apps_add)
    listing = subparsers.add_parser("apps:list", help="list the apps (never their secrets)")
    listing.add_argument("--json", action="store_true")
    _add_location(listing)
    listing.set_defaults(handler=cmd_apps_list)
    remove = subparsers.add_parser("apps:remove", help="remove an app by id")
    remove.add_argument("app_id", metavar="id")
    _add_location(remove)
    remove.set_defaults(handler=cmd_apps_remove)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="echo-server", description="Laravel Echo server (laravel-echo-server compatible)."
    )
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    start = subparsers.add_parser("start", help="run the server")
    _add_location(start)
    start.add_argument("--dev", action="store_true", help="development mode (debug logging)")
    start.add_argument("--force", action="store_true", help="stop a running server first")
    start.add_argument("--workers", default=None, metavar="N",
                       help="processes serving the port, or auto (one per core); over "
                       "ECHO_WORKERS and the config's `workers` (1)")
    start.add_argument("--worker-ports", default=None, metavar="PORT[,PORT...]",
                       help="a port of each worker's own besides the shared one, for a proxy's "
                       "upstream: the first of N consecutive ports, or one per worker; over "
                       "ECHO_WORKER_PORTS and the config's `workerPorts`")
    start.set_defaults(handler=cmd_start)

    stop = subparsers.add_parser("stop", help="stop the server named in the lock file")
    _add_location(stop)
    stop.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (10)")
    stop.set_defaults(handler=cmd_stop)

    reload = subparsers.add_parser(
        "reload", help="make the running server re-read its config (as SIGHUP does)")
    _add_location(reload)
    reload.set_defaults(handler=cmd_reload)

    status = subparsers.add_parser("status", help="show the running server's live figures")
    _add_location(status)
    status.add_argument("--json", action="store_true", help="print /status.json as is")
    status.set_defaults(handler=cmd_status)

    _add_init_parser(subparsers)

    for name, handler, verb in (
        ("client:add", cmd_client_add, "add an API client (or renew its key)"),
        ("client:remove", cmd_client_remove, "remove an API client"),
    ):
        sub = subparsers.add_parser(name, help=verb)
        sub.add_argument("app_id", nargs="?", default=None, metavar="id")
        _add_location(sub)
        sub.set_defaults(handler=handler)

    _add_apps_parsers(subparsers)

    publish = subparsers.add_parser(
        "publish", help="publish an event (as Laravel's broadcaster would) to the config's source"
    )
    publish.add_argument("channel", help="Echo channel, e.g. leads-management or "
                         "private-admin-dashboard.5")
    publish.add_argument("event", help="event name, e.g. lead.assigned")
    publish.add_argument("data", nargs="?", default="{}", help="JSON object (default {})")
    publish.add_argument("--socket", default=None, help="sender's socket id (left out: toOthers)")
    publish.add_argument("--source", default=None, help="source URL (default: the config's "
                         "first Redis source), e.g. redis://127.0.0.1:6379/0?prefix=laravel_database_")
    _add_location(publish)
    publish.set_defaults(handler=cmd_publish)

    demo = subparsers.add_parser(
        "demo", help="run the lead-management demo page and its backend (prints the URL)")
    demo.add_argument("--port", type=int, default=6001, help="echo-server port (6001)")
    demo.add_argument("--backend-port", type=int, default=8080,
                      help="the demo backend's port, the Laravel app's part (8080)")
    demo.add_argument("--host", default="127.0.0.1", help="listen address of both (127.0.0.1; "
                      "the demo logs anyone in by ?admin=<id>: keep it on loopback)")
    demo.add_argument("--redis", default=None, metavar="URL",
                      help="publish through Redis as Laravel does, e.g. redis://127.0.0.1:6379/0 "
                      "(default: in-process, no Redis needed)")
    demo.add_argument("--token-ttl", type=float, default=600.0,
                      help="seconds a login token lives; the page renews it (600)")
    demo.set_defaults(handler=cmd_demo)

    install = subparsers.add_parser(
        "install-client", help="fetch the socket.io-client browser bundle with npm"
    )
    install.add_argument("--version", default=SOCKET_IO_CLIENT_VERSION, help="(2.5.0)")
    install.add_argument("--dest", default=str(PACKAGE_STATIC), help="target directory")
    install.set_defaults(handler=cmd_install_client)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("echo-server")
    except Exception:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `echo-server` and `python -m echo_server`; returns the exit code."""
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        return int(args.handler(args) or 0)
    except (cfg.ConfigError, lockfile.LockError, CliError) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
