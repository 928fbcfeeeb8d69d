"""Prometheus metrics for the seed's six figures: connections, throughput,
connection latency, reconnections, errors and memory.

Nothing here runs per delivered message. Gauges and most counters are read at
scrape time from figures the server keeps anyway (the state layer, the error
log, each source's health, the hub's running total); histograms observe once
per batch, connection or auth request. Each server has its own registry, so
several servers in one process (tests, embedding) never mix their figures.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from channel_auth import AuthRequest, AuthResult, ChannelAuthorizer

from .api import same_secret

if TYPE_CHECKING:
    from .server import EchoServer
    from .transport.sockets import Socket

disable_created_metrics()  # the *_created samples only add noise to every scrape

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RECONNECT_WINDOW = 60.0
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)


def _subject(socket: Socket) -> str | None:
    claims = (socket.data or {}).get("claims")
    if isinstance(claims, dict) and claims.get("sub") is not None:
        return f"sub:{claims['sub']}"
    return None


def returning_identity(socket: Socket) -> str | None:
    """Who a new connection is: its JWT subject, else the ``io`` cookie a browser
    sends back from its previous EIO3 session (that session's sid)."""
    subject = _subject(socket)
    if subject is not None:
        return subject
    for part in socket.handshake.headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == "io" and value:
            return f"io:{value}"
    return None


def leaving_identities(socket: Socket) -> list[str]:
    """What a reconnect of this client will show: its subject, or for EIO3 its sid,
    which the server handed out as the ``io`` cookie."""
    identities = [s for s in (_subject(socket),) if s is not None]
    if socket.session.eio == 3:
        identities.append(f"io:{socket.session.sid}")
    return identities


class Metrics:
    def __init__(self, server: EchoServer) -> None:
        self.server = server
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(ProcessCollector(registry=None))
        self.registry.register(_StateCollector(server))
        r = self.registry
        self.broadcast_seconds = Histogram(
            "echo_broadcast_seconds", "Source batch received to the last recipient's frame "
            "written", buckets=_LATENCY_BUCKETS, registry=r)
        self.connect_seconds = Histogram(
            "echo_connect_seconds", "Engine.IO handshake to Socket.IO connected",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.reconnections = Counter(
            "echo_reconnections", "Connections from a client that disconnected within the last "
            "60 s (recognised by JWT subject or the EIO3 io cookie)", registry=r)
        self.disconnections = Counter(
            "echo_disconnections", "Disconnections by reason", ["reason"], registry=r)
        self.auth_requests = Counter(
            "echo_auth_requests", "Channel authorizations by result", ["result"], registry=r)
        self.auth_seconds = Histogram(
            "echo_auth_seconds", "Channel authorization time", buckets=_LATENCY_BUCKETS,
            registry=r)
        self.refused = Counter(
            "echo_connections_refused", "Connections refused at the handshake", registry=r)
        self._recent: OrderedDict[str, float] = OrderedDict()

    # -- hooks ------------------------------------------------------------------------
    def observe_batch(self, events: int, delivered: int, seconds: float) -> None:
        self.broadcast_seconds.observe(seconds)

    def connected(self, socket: Socket) -> None:
        now = time.monotonic()
        self.connect_seconds.observe(now - socket.handshake.issued)
        identity = returning_identity(socket)
        if identity is not None:
            self._forget_older_than(now - RECONNECT_WINDOW)
            if self._recent.pop(identity, None) is not None:
                self.reconnections.inc()

    def disconnected(self, socket: Socket, reason: str) -> None:
        self.disconnections.labels(reason).inc()
        now = time.monotonic()
        for identity in leaving_identities(socket):
            self._recent[identity] = now
            self._recent.move_to_end(identity)
        while len(self._recent) > 100_000:
            self._recent.popitem(last=False)

    def refused_connection(self, socket: Socket, message: str) -> None:
        self.refused.inc()

    def _forget_older_than(self, limit: float) -> None:
        recent = self._recent
        while recent:
            _identity, at = next(iter(recent.items()))
            if at >= limit:
                break
            recent.popitem(last=False)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MeasuredAuthorizer:
    """Counts and times every channel authorization, whatever decides it."""

    def __init__(self, inner: ChannelAuthorizer, metrics: Callable[[], Metrics | None]) -> None:
        self.inner = inner
        self._metrics = metrics

    async def authorize(self, request: AuthRequest) -> AuthResult:
        started = time.monotonic()
        result = await self.inner.authorize(request)
        metrics = self._metrics()
        if metrics is not None:
            metrics.auth_seconds.observe(time.monotonic() - started)
            label = "allowed" if result.allowed else ("error" if result.status == 0 else
                                                      "denied")
            metrics.auth_requests.labels(label).inc()
        return result

    async def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            await close()


class _StateCollector:
    """Figures read at scrape time from what the server keeps anyway."""

    def __init__(self, server: EchoServer) -> None:
        self.server = server

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        server = self.server
        connections = GaugeMetricFamily("echo_connections", "Open connections",
                                        labels=["protocol", "transport"])
        kinds = server.state.connections_by_kind()
        for protocol in ("eio3", "eio4"):
            for transport in ("websocket", "polling"):
                connections.add_metric([protocol, transport], kinds.get((protocol, transport), 0))
        yield connections
        counts = server.rooms.counts()
        yield GaugeMetricFamily("echo_channels", "Channels with at least one local socket",
                                value=len(counts))
        yield GaugeMetricFamily("echo_subscriptions", "Socket-channel subscriptions",
                                value=sum(counts.values()))
        yield GaugeMetricFamily("echo_presence_members",
                                "Presence memberships of local sockets",
                                value=server.channels.presence_members)
        received = CounterMetricFamily("echo_events_received", "Events received by source",
                                       labels=["source"])
        health = GaugeMetricFamily("echo_source_up", "1 when the event source is connected",
                                   labels=["source", "url"])
        outages = CounterMetricFamily("echo_source_outages", "Times the source went away",
                                      labels=["source", "url"])
        per_kind: dict[str, int] = {}  # several sources may share a kind (two redis:// URLs)
        for runner in server.runners:
            h = runner.health
            per_kind[h.kind] = per_kind.get(h.kind, 0) + h.events
            health.add_metric([h.kind, h.url], 1 if h.connected else 0)
            outages.add_metric([h.kind, h.url], h.outages)
        for kind, events in per_kind.items():
            received.add_metric([kind], events)
        yield received
        yield health
        yield outages
        yield CounterMetricFamily("echo_messages_delivered",
                                  "Messages written to clients (one per recipient)",
                                  value=server.hub.delivered)
        errors = CounterMetricFamily("echo_errors", "Bad input and failures by kind",
                                     labels=["kind"])
        for kind, count in sorted(server.errors.counts.items()):
            errors.add_metric([kind], count)
        yield errors


def metrics_token_ok(token: str | None, headers: dict[str, str], query: dict[str, str]) -> bool:
    if not token:
        return True
    auth = headers.get("authorization", "")
    given = auth[7:] if auth[:7].lower() == "bearer " else query.get("token")
    return given is not None and same_secret(given, token)


__all__ = ["CONTENT_TYPE", "MeasuredAuthorizer", "Metrics", "metrics_token_ok"]
