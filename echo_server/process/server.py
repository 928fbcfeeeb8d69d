"""Wires the layers together and owns the listening socket: the one module that knows them all.

About 700 lines because the start and stop orders live here, each step next to the reason it
comes where it does (presence before clients, sources after the cluster, what a shutdown
flushes first), and what is built before the core to be passed in (sources, the cluster,
recovery's parts, the shared presence store, the histogram that times each batch); the parts
themselves are in their rooms. Every wire protocol, Socket.IO and Pusher too, is built from
an ``Assembly`` (the core, the settings, the app store, the app seats, the app hook) by
the factories adapters/registry.py lists, and routed, started, stopped, reloaded and counted
by what it declares (adapters/protocols.py): this module imports no protocol's parts, and
one more protocol is a line in the registry, not a change here.

source -> SourceRunner -> core Fanout (rooms, one frame per wire) -> the adapter's transports;
client messages -> transport (Engine.IO, Socket.IO) -> adapter (Echo) -> ChannelCore.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import secrets
import signal
import ssl
import tempfile
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from broadcaster.event import BroadcastEvent
from broadcaster.sources import EventSource, source_from_url, url_scheme
from broadcaster.sources.memory import MemorySource
from broadcaster.sources.redis_stream import RedisStreamSource, read_entries
from channel_auth import ChannelAuthorizer
from channel_auth.cache import CachingAuthorizer
from channel_auth.http_callback import HttpCallbackAuthorizer
from channel_auth.jwt_auth import JwtAuthenticator
from channel_auth.rules import RuleAuthorizer, RuleConfigError

from ..adapters.protocols import Assembly, ProtocolFactory, Served
from ..adapters.registry import PROTOCOLS
from ..apps.authorizers import callback_settings
from ..apps.manager import serving_store
from ..apps.quota import SharedAppQuota
from ..apps.seats import AppSeats
from ..apps.store import StaticStore
from ..apps.tags import SEPARATOR
from ..config import Config, ConfigError, ensure_dev_client
from ..core.channels import ChannelCore
from ..core.cluster import Cluster, ClusterFeeds
from ..core.events import PresenceChanged
from ..core.occupancy import Occupancy
from ..core.positions import Positions
from ..core.presence import RedisPresenceStore, key_tag
from ..core.recovery_parts import RecoveryParts
from ..core.shared_sessions import SharedSessions
from ..core.state import ServerState
from ..core.stream_gap import StreamGap
from ..transport.guard import ConnectionGuard
from ..transport.http import HttpConnection, Request, Response, RouteResult
from ..web import static_dir
from ..web.api import HttpApi
from ..web.demo_files import DemoFiles
from ..web.health import Health, Phase
from ..web.metrics import CONTENT_TYPE, Metrics, broadcast_histogram, metrics_token_ok
from ..web.pusher_api import PusherApi
from ..web.status_page import StatusPage
from ..webhooks.dispatcher import Webhooks
from .errors import ErrorLog
from .ingest import SourceRunner, default_app_only
from .reload import Reloader
from .siblings import SiblingLink, WorkerSlot

log = logging.getLogger("echo_server")

LISTEN_BACKLOG = 4096
# Clients wait (their reconnect backoff) until start-up is done: a restarted instance or
# worker purges its previous life's presence members as its cluster starts, and would take
# the members its first clients wrote meanwhile with them. /healthz and /readyz answer.
STARTING = Response(503, b'{"error":"starting"}',
                    [("Retry-After", "1"), ("Cache-Control", "no-store")], "application/json")
SHUTDOWN_TIMEOUT = 10.0
Part = TypeVar("Part")


class EchoServer:
    def __init__(self, config: Config, *, authorizer: ChannelAuthorizer | None = None,
                 instance_id: str | None = None, worker: WorkerSlot | None = None,
                 protocols: Sequence[ProtocolFactory] = PROTOCOLS) -> None:
        """``protocols``: the wire protocols served (adapters/registry.py's by default)."""
        self.config = config
        self.worker = worker  # under --workers N, its slot's sockets (workers.py)
        self.errors = ErrorLog()
        self.memory = MemorySource()
        self.instance_id = (instance_id or (worker.instance_id if worker else None)
                            or config.instance_id or secrets.token_hex(6))
        self.authorizer = authorizer or build_authorizer(config)
        jwt = config.jwt
        self.authenticator = JwtAuthenticator(jwt) if jwt is not None else None
        # What the core works with is built first, from the configuration alone, and passed
        # in; `start` starts it once Redis answers.
        self._sources = [self._source(url) for url in config.source_urls
                         if url_scheme(url) != "memory"]  # that is self.memory
        self._redis_client = self._redis_for_presence()
        self._redis: Any = None  # the same client, once Redis answered at start
        stream = self._shared_stream()
        positions = Positions() if stream is not None else None
        self.cluster = self._cluster(positions)
        broadcast = broadcast_histogram() if config.metrics_enabled else None
        self.core = ChannelCore(self.authorizer, self.errors.report,
                                limits=config.channel_limits, authenticator=self.authenticator,
                                recovery=self._recovery(positions, stream), cluster=self.cluster,
                                shared_presence=self._shared_presence(),
                                delivery_observer=broadcast.observe if broadcast else None)
        self.occupancy = Occupancy(self.core.lifecycle)  # server-wide occupied / vacated
        self.webhooks = Webhooks(config.webhook_endpoints, config.webhook_delivery,
                                 self.core.lifecycle, presence_grace=config.presence_grace)
        self.dev_client = ensure_dev_client(config)
        # Every app: the file's (a reload replaces them), then the database's, if any.
        self.file_apps = StaticStore(config.apps)
        self.apps = serving_store(self.file_apps, config.app_manager)
        # Each app's maxConnections, its Pusher clients' and Socket.IO pages' together,
        # counted over the workers (`apps/quota.py`) and, through the cluster, the instances.
        self.seats = AppSeats(SharedAppQuota(worker.directory, worker.slot,
                                             len(worker.link_paths))
                              if worker is not None else None,
                              self.cluster.elsewhere if self.cluster is not None else None)
        limits = config.limits
        self.http_guard = ConnectionGuard(limits.http, limits.trusted_proxies,
                                          self.errors.report)
        assembly = Assembly(
            self.core, self.errors.report, config, self.apps, self.seats, static_dir(),
            # A database app's webhooks start with its first client.
            on_app=self.webhooks.app_seen if config.app_manager is not None else None)
        # Every wire protocol as it declares itself (adapters/protocols.py): the server routes
        # by these alone.
        self.protocols: tuple[Served, ...] = tuple(make(assembly) for make in protocols)
        self._routes = tuple(route for served in self.protocols for route in served.routes)
        self._upgrades = tuple(up for served in self.protocols for up in served.upgrades)
        self.runners: list[SourceRunner] = []
        # Under --workers N the other workers ask this one for its figures, and it them.
        self.link = SiblingLink(worker) if worker is not None else None
        self.state = ServerState(self.core, instance_id=self.instance_id,
                                 connections_by_kind=lambda: sum(
                                     (served.connections() for served in self.protocols),
                                     Counter[tuple[str, str]]()),
                                 sources=lambda: [runner.health for runner in self.runners],
                                 errors=self.errors,
                                 app_connections=self.seats.everywhere,
                                 webhooks=self.webhooks.figures
                                 if config.webhook_endpoints or config.app_manager is not None
                                 else None,
                                 cluster=self.cluster,
                                 worker=worker.slot if worker is not None else None,
                                 siblings=self.link.ask if self.link is not None else None)
        self.api = HttpApi(self.apps, self.publish_events, self.state,
                           http_publish=config.subscribers_http,
                           cors=config.api_origin_allow, extra_headers=config.extra_headers)
        self.pusher_api = PusherApi(self.apps, self.publish_events, self.state,
                                    max_channel_name=config.limits.channels.max_channel_name)
        self.demo_files = DemoFiles()  # the built demo page at /demo (`echo-server demo`)
        self.metrics = (Metrics(self.state, self.core.lifecycle, broadcast)
                        if broadcast is not None else None)
        self.status_page = StatusPage(self.state, self._status_credentials,
                                      sample_interval=config.status_sample_interval)
        self.health = Health(self.state, check_timeout=config.health_check_timeout)
        if self.link is not None:
            self.link.answers["status"] = self.status_page.figures_json
            if self.metrics is not None:
                self.link.answers["metrics"] = self.metrics.render
        self.reloader = Reloader(self, build_authorizer)  # SIGHUP, `echo-server reload`
        self._server: asyncio.Server | None = None
        self._reverb_server: asyncio.AbstractServer | None = None  # REVERB_SERVER_PORT
        self._own_port_server: asyncio.AbstractServer | None = None

    def part(self, kind: type[Part]) -> Part:
        """The part of a protocol that is a ``kind`` (its engine, its endpoint...), for tests
        and tools to look into; the server itself goes through the declarations only."""
        for served in self.protocols:
            for part in served.parts:
                if isinstance(part, kind):
                    return part
        raise LookupError(f"no protocol served here has a {kind.__name__}")

    def _connections(self) -> int:
        """Open connections, every protocol's."""
        return sum(self.state.connections_by_kind().values())

    def _status_credentials(self) -> list[str]:
        """What opens the status page: any key of the unsigned API, or the metrics token."""
        accepted = [key for app in self.file_apps.cached_all() if (key := app.unsigned_key)]
        if self.config.metrics_token:
            accepted.append(self.config.metrics_token)
        return accepted

    def _metrics_response(self, request: Request) -> Response | Awaitable[Response]:
        if self.metrics is None:
            return self.api.not_found(request)
        if not metrics_token_ok(self.config.metrics_token, request.headers, request.query):
            return Response(403, b'{"error":"Unauthorized"}', [], "application/json")
        return self._server_metrics(self.metrics)

    async def _server_metrics(self, metrics: Metrics) -> Response:
        return Response(200, await metrics.render_server(), [], CONTENT_TYPE)

    # -- lifecycle ------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        raise_fd_limit()
        guard = self.http_guard
        worker = self.worker
        where: dict[str, Any] = (
            {"sock": worker.listen} if worker is not None else
            {"host": self.config.host or None, "port": self.config.port, "reuse_address": True})
        context = self._ssl_context()

        def connection() -> HttpConnection:
            return HttpConnection(self._route, self._upgrade, guard)

        self._server = await loop.create_server(connection, backlog=LISTEN_BACKLOG, ssl=context,
                                                **where)
        if worker is not None and worker.own_port is not None:  # workerPorts: behind a proxy
            self._own_port_server = await loop.create_server(connection, sock=worker.own_port,
                                                             ssl=context)
            log.info("worker %d also serves port %d, its own (workerPorts)", worker.slot,
                     worker.own_port.getsockname()[1])
        if self.link is not None:
            await self.link.start()
        await self.apps.start()  # the database's, if any: listening for its changes
        for served in self.protocols:  # what they read first (the apps' Socket.IO endpoints)
            await served.start()
        await self._listen_as_reverb(self.worker is None)
        self.status_page.start()
        await self._start_presence()
        # Queued in Redis with `database: "redis"`: another instance delivers what this one
        # queued if it dies.
        shared = self._redis if self.config.presence_backend == "redis" else None
        self.webhooks.start(shared, key_tag(self.config.key_prefix), self.instance_id)
        self._start_sources()
        self.health.phase = Phase.SERVING
        self._announce()

    async def _listen_as_reverb(self, alone: bool) -> None:
        """Reverb's port too (its `.env` says where), so a frontend built for Reverb connects
        unchanged. One process only: workers share one port, not two."""
        reverb = self.config.reverb_listen
        if reverb is None:
            return
        if not alone:
            log.warning("REVERB_SERVER_PORT %d is not served under --workers: point the "
                        "frontend (VITE_REVERB_PORT) at port %d", reverb[1], self.config.port)
            return
        guard = self.http_guard
        self._reverb_server = await asyncio.get_running_loop().create_server(
            lambda: HttpConnection(self._route, self._upgrade, guard), host=reverb[0],
            port=reverb[1], backlog=LISTEN_BACKLOG, ssl=self._ssl_context(), reuse_address=True)
        log.info("also serving Reverb's port %d (REVERB_SERVER_PORT)", reverb[1])

    async def stop(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Stop accepting, close every client cleanly, stop the sources."""
        self.health.phase = Phase.DRAINING
        if self._reverb_server is not None:
            self._reverb_server.close()
        if self._server is not None:
            self._server.close()
        if self._own_port_server is not None:
            self._own_port_server.close()
            self._own_port_server = None
        if self.link is not None:
            await self.link.stop()
        for served in self.protocols:
            served.stop()
        self.http_guard.stop()
        self.status_page.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.apps.close(), timeout / 4)
        for served in self.protocols:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(served.close(), timeout / 4)
        self.core.end_sessions()
        if self.core.shared is not None:  # the sessions just parked, for other instances
            await self.core.shared.stop(timeout / 4)
        for runner in self.runners:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(runner.stop(), timeout / 2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.core.drain(), timeout / 4)
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.cluster.stop(), timeout / 4)
            self.cluster = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.webhooks.stop(), timeout / 4)
        # Each close bounded too: a peer that stopped answering must not hold the exit.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.reloader.close(), timeout / 4)
        for closable in (self.authorizer, self.authenticator):
            close = getattr(closable, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(close(), timeout / 4)
        if self._redis_client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._redis_client.aclose(), timeout / 4)
            self._redis_client = self._redis = None
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout / 2)
            self._server = None

    async def drain(self, delay: float) -> None:
        """Readiness off first, for ``delay`` seconds (``health.drainDelay``) while everything
        else is still served, so the orchestrator sends no new clients before the connected
        ones are closed (their reconnects then land on other instances); then `stop`."""
        self.health.phase = Phase.DRAINING
        if delay > 0:
            log.info("draining: /readyz answers 503 for %.1f s before %d connections are "
                     "closed", delay, self._connections())
            await asyncio.sleep(delay)
        log.info("shutting down: closing %d connections", self._connections())
        await self.stop()

    def publish(self, event: BroadcastEvent) -> bool:
        """Feed the in-memory bus (tests, and a broadcaster embedded in this process)."""
        if not self.memory.publish(event):
            return False
        if self.cluster is not None:
            # The API answered here; the other instances' (and workers') clients hear it
            # through the relay.
            self.cluster.relay_broadcast(event)
        return True

    def publish_events(self, events: list[BroadcastEvent]) -> bool:
        """What the HTTP APIs publish: out at once, as one batch through the fan-out the
        sources feed (no queue, no task between the request and the clients' writes), then
        to the other instances. Counted as the in-process bus's, which carried them before."""
        self.core.fanout.deliver(events)
        if self.runners:
            self.runners[0].carried(len(events))  # the bus's runner comes first
        cluster = self.cluster
        if cluster is not None:
            for event in events:
                cluster.relay_broadcast(event)
        return True

    # -- presence -------------------------------------------------------------------
    def _redis_for_presence(self) -> Any:
        """The client for presence, publishPresence, the cluster and the sessions' records,
        when the config asks for Redis presence or publishPresence (it connects on first use).

        From `redis_client.make_client`, so Sentinel and Cluster URLs work here as for the
        sources (plain Redis keeps its blocking pool)."""
        c = self.config
        if not (c.presence_backend == "redis" or c.publish_presence):
            return None
        from .redis_client import make_client

        return make_client(c.redis_url)

    async def _start_presence(self) -> None:
        """Redis presence when the config says redis and Redis answers; memory otherwise."""
        c = self.config
        client = self._redis_client
        if client is None:
            return
        from broadcaster.sources.base import display_url

        from .redis_client import make_client

        probe = make_client(c.redis_url, max_connections=1, retries=0)
        try:
            # A Redis that accepts and never answers must not hold the start for ever: as
            # long as /readyz waits for it (health.checkTimeout).
            await asyncio.wait_for(probe.ping(), c.health_check_timeout)
        except Exception as exc:
            log.warning("presence is kept in memory for this instance: Redis at %s did not "
                        "answer (%s)", display_url(c.redis_url), exc)
            return
        finally:
            await probe.aclose()
        self._redis = client
        store = self.core.presence.share()  # with Redis presence, for this whole run
        if c.publish_presence:
            self.core.lifecycle.on(PresenceChanged, self._publish_presence)
        if self.cluster is not None:
            await self._start_cluster(self.cluster, store)

    async def _start_cluster(self, cluster: Cluster, store: RedisPresenceStore | None) -> None:
        """Instances sharing this Redis behave as one: relay, liveness, cluster figures."""
        presence = self.core.presence
        await cluster.start(ClusterFeeds(
            emit_local=self.core.fanout.emit_to_room, deliver=self.core.fanout.deliver,
            snapshot=self.state.snapshot,
            announce_presence=presence.announced, purged=presence.purged,
            presence=store, restore_presence=presence.restore, occupancy=self.occupancy,
            counts=self.seats.own))
        await cluster.listening()
        if self.core.shared is not None:  # in the cluster: its sessions may move (and come)
            self.core.shared.start()

    async def _publish_presence(self, event: PresenceChanged) -> None:
        """``databaseConfig.publishPresence``: the reference's message, minus socket ids."""
        from echo_common.jsoncodec import dumps

        channel = event.channel
        if SEPARATOR in channel:  # an isolated app's: never told to the default app's Redis
            return
        try:
            members = event.members
            if members is None:
                members = await self.core.presence.store.members(channel)
            message = dumps({"event": {"channel": f"{channel}:members",
                                       "members": [m.public() for m in members]}})
            if self.cluster is not None:
                await self.cluster.publish("PresenceChannelUpdated", message)
            else:
                await self._redis.publish("PresenceChannelUpdated", message)
        except Exception as exc:
            self.errors.report("presence", f"presence update of {channel!r} failed: {exc}")

    # -- sources ----------------------------------------------------------------
    def _start_sources(self) -> None:
        """The in-process bus (the HTTP API's) always; then every configured source URL."""
        deliver = self.core.fanout.deliver
        self.runners.append(SourceRunner(self.memory, deliver))
        for source in self._sources:
            if source.kind == "redis-stream" and self.config.instance_id is None:
                log.warning("%s: no instanceId / ECHO_INSTANCE_ID is configured, so this run "
                            "reads the stream as the new instance %r: nothing published while "
                            "it was down is replayed, and each start leaves a consumer group "
                            "behind", source.display_url, self.instance_id)
            self.runners.append(SourceRunner(source, default_app_only(deliver),
                                             on_down=self._source_down))
        for runner in self.runners:
            runner.start()

    # -- built before the core ----------------------------------------------------------
    def _source(self, url: str) -> EventSource:
        source = source_from_url(url, key_prefix=self.config.key_prefix,
                                 instance_id=self.instance_id)
        source.on_bad_message = self.errors.report
        return source

    def _shared_stream(self) -> RedisStreamSource | None:
        """The stream that makes recovery work on any instance (core.shared_sessions), or
        None: with recovery on, the cluster, and one Redis stream as the only source of
        events, every packet a client can miss on a public or private channel is in the
        stream, under one id everywhere."""
        c = self.config
        if c.recovery is None or not c.clustered:
            return None
        source = self._sources[0] if len(self._sources) == 1 else None
        if not isinstance(source, RedisStreamSource):
            log.info("connection-state recovery works on the instance a client was connected "
                     "to; for recovery on any instance, make one redis-stream:// URL the only "
                     "source (README: Recovery)")
            return None
        return source

    def _shared_presence(self) -> RedisPresenceStore | None:
        """With Redis presence: the store the instances share, used (``presence.share``) if
        Redis answers at start."""
        c = self.config
        if c.presence_backend != "redis":
            return None
        return RedisPresenceStore(self._redis_client, key_prefix=c.key_prefix,
                                  instance_id=self.instance_id)

    def _cluster(self, positions: Positions | None) -> Cluster | None:
        """With Redis presence and the cluster on: built now, started (in `start`) if Redis
        answers then."""
        c = self.config
        if not c.clustered:
            return None
        recovery = c.recovery
        return Cluster(
            self._redis_client, c.redis_url, self.instance_id, key_prefix=c.key_prefix,
            heartbeat_interval=c.cluster_heartbeat_interval, liveness_ttl=c.cluster_liveness_ttl,
            positions=positions,
            # A mark must outlive any session that could still ask about it.
            marker_ttl_ms=int(recovery.window * 3000) + 60_000 if recovery is not None else 0,
            # The other workers' connections are counted exactly (`apps/quota.py`).
            siblings=self.worker.instance_ids if self.worker is not None else ())

    def _recovery(self, positions: Positions | None,
                  stream: RedisStreamSource | None) -> RecoveryParts | None:
        """``positions`` and ``stream`` come together (``_shared_stream``) or not at all."""
        recovery = self.config.recovery
        if recovery is None:
            return None
        shared = None
        if positions is not None and stream is not None:
            # Read through the shared client's blocking pool: a burst of recoveries (every
            # client of a dead instance at once) waits for a connection rather than failing.
            gap = StreamGap(positions, functools.partial(read_entries, self._redis_client,
                                                         stream.stream), recovery.catch_up)
            shared = SharedSessions(self._redis_client, key_tag(self.config.key_prefix),
                                    self.instance_id, gap, window=recovery.window,
                                    max_packets=recovery.history.max_per_channel)
        return RecoveryParts.build(recovery, shared)

    def _source_down(self, runner: SourceRunner, exc: BaseException) -> None:
        url = runner.health.url
        if runner.health.outages == 1 and runner.health.events == 0:
            apps = self.file_apps.cached_all()
            app_id = apps[0].id if apps else "<appId>"
            what = {"postgres": "PostgreSQL"}.get(runner.health.kind, "Redis")
            log.warning(
                "%s is not reachable at %s (%s). Serving with the in-memory bus: publish with "
                "POST /apps/%s/events. Start %s or fix the source in laravel-echo-server.json "
                "(databaseConfig.redis or sources); retrying in the background and switching "
                "over when it answers.", what, url, exc, app_id, what)
        else:
            log.warning("event source %s is unreachable (%s); retrying in the background",
                        url, exc)

    # -- routing ----------------------------------------------------------------
    def _route(self, request: Request, conn: HttpConnection) -> RouteResult:
        path = request.path
        for route in self._routes:
            if route.matches(path):
                if not route.while_starting and self.health.phase is Phase.STARTING:
                    return STARTING
                return route.handle(request, conn)
        if path in Health.PATHS and request.method in ("GET", "HEAD"):
            return self.health.handle(request)
        if path == "/metrics" and request.method == "GET":
            return self._metrics_response(request)
        if path in StatusPage.PATHS:
            return self.status_page.handle(request)
        if DemoFiles.matches(path):
            return self.demo_files.handle(request)
        # Signed: Pusher's API; else laravel-echo-server's own.
        answer = self.pusher_api.handle(request)
        return answer if answer is not None else self.api.handle(request)

    def _upgrade(self, request: Request, conn: HttpConnection, rest: bytes) -> None:
        if self.health.phase is Phase.STARTING:
            conn.refuse_upgrade(STARTING)
            return
        path = request.path
        for upgrade in self._upgrades:
            if upgrade.matches(path):
                upgrade.handle(request, conn, rest)
                return
        conn.refuse_upgrade(self.api.not_found(request))

    # -- set-up details -----------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext | None:
        c = self.config
        if c.protocol != "https":
            return None
        if not c.ssl_cert_path or not c.ssl_key_path:
            raise ValueError("protocol https needs sslCertPath and sslKeyPath")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        # `secureOptions` is the reference's: OpenSSL's SSL_OP_* bits, which Node passes
        # to OpenSSL as they are; so do we. Python deprecates setting the SSL_OP_NO_TLS*
        # bits (minimum_version says it better), but OpenSSL honours them, and they are
        # what existing files hold (`init` writes SSL_OP_NO_TLSv1).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.options |= c.ssl_secure_options
        certfile = c.ssl_cert_path
        if c.ssl_chain_path:
            # Python wants intermediates appended to the certificate file.
            with open(c.ssl_cert_path, "rb") as cert, open(c.ssl_chain_path, "rb") as chain:
                combined = cert.read().rstrip() + b"\n" + chain.read()
            fd, certfile = tempfile.mkstemp(suffix=".pem")
            with os.fdopen(fd, "wb") as out:
                out.write(combined)
        try:
            context.load_cert_chain(certfile, c.ssl_key_path, c.ssl_passphrase or None)
        finally:
            if certfile != c.ssl_cert_path:
                os.unlink(certfile)
        return context

    def _announce(self) -> None:
        c = self.config
        scheme = "https" if c.protocol == "https" else "http"
        log.info("echo-server listening on %s://%s:%d (socket.io path %s, Engine.IO 3 and 4)",
                 scheme, c.host or "0.0.0.0", self.port, c.socketio_path + "/")
        if self.dev_client is not None:
            log.warning(
                "No API clients configured; generated a development client for this run: "
                "appId=%s key=%s. Publish with: curl -X POST "
                "'%s://127.0.0.1:%d/apps/%s/events?auth_key=%s' -H 'Content-Type: "
                "application/json' -d '{\"channel\":\"leads-management\",\"name\":"
                "\"lead.assigned\",\"data\":{\"lead\":{\"id\":1}}}'",
                self.dev_client["appId"], self.dev_client["key"], scheme, self.port,
                self.dev_client["appId"], self.dev_client["key"])


def build_authorizer(config: Config) -> ChannelAuthorizer:
    """Local rules (when configured), then the cache (when on), then Laravel's callback."""
    callback = HttpCallbackAuthorizer(config.auth_hosts, config.auth_endpoint,
                                      **callback_settings(config))
    authorizer: ChannelAuthorizer = callback
    if config.auth_cache_ttl > 0:
        authorizer = CachingAuthorizer(callback, config.auth_cache_ttl)
    try:
        rules = config.channel_rules
    except RuleConfigError as exc:
        raise ConfigError(str(exc)) from None
    if rules:
        authorizer = RuleAuthorizer(rules, authorizer)
    return authorizer


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def raise_fd_limit() -> None:
    """Every connection is a file descriptor, and the usual soft limit (1,024) would refuse
    clients long before memory runs short: raise it to the hard limit the system allows."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft >= hard:
        return
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)


async def wait_for_stop_signal() -> None:
    """Until SIGTERM or SIGINT: both mean a clean shutdown."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()


# Young-generation threshold for the cyclic GC (CPython's default is 700). Each batch of
# events keeps a few hundred objects alive for a moment (replies, events, frame lists);
# at 700 nearly every batch triggered a collection that traced them and promoted them,
# which in turn made the older generations' (slow) collections come round sooner.
GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """What is allocated by start-up lives as long as the process: freeze it out of every
    future collection, and collect the young generation less often (a perf profile of the
    one-recipient-per-event benchmark had 6 % of the server's time in the collector)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


async def serve(config: Config, load: Callable[[], Config] | None = None, *,
                worker: WorkerSlot | None = None) -> int:
    """``load`` reads the configuration again on SIGHUP (the CLI's, with its options); a
    worker gets its slot's sockets and instance id."""
    server = EchoServer(config, worker=worker)
    reloader = server.reloader
    if load is not None:
        reloader.load = load
    if hasattr(signal, "SIGHUP"):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.request)
    try:
        async with reloader.lock:  # a reload asked for while starting waits until started
            await server.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.host or "0.0.0.0", config.port, exc)
        return 1
    tune_gc()
    await wait_for_stop_signal()
    await server.drain(server.config.drain_delay)  # as last reloaded
    return 0


def run(config: Config, load: Callable[[], Config] | None = None, *,
        worker: WorkerSlot | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the CLI's ``start`` (and each worker of it)."""
    factory = _loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(serve(config, load, worker=worker))
