"""Prometheus metrics for the seed's six figures: connections, throughput,
connection latency, reconnections, errors and memory.

Nothing here runs per delivered message. Gauges and most counters are read at
scrape time from figures the server keeps anyway (the state layer, the error
log, each source's health, the hub's running total); histograms observe once
per batch, connection or auth request, without a lock (``loop_histogram``). Each
server has its own registry, so several servers in one process (tests, embedding)
never mix their figures.

Under `--workers N` a scrape, whichever worker it reaches, returns every worker's figures,
each sample labelled with its ``worker`` (asked of the others at scrape time: `siblings.py`),
plus ``echo_worker_up``. Labelled rather than summed: each worker's counters are monotonic
while the sum would drop when one restarts, which Prometheus would read as a counter reset
of the whole server. ``sum(rate(echo_messages_delivered_total[1m]))`` is the server's.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.process_collector import ProcessCollector

from echo_common.signing import same_secret

from ..apps.model import DEFAULT_APP_LABEL, OTHER_APPS_LABEL
from ..core.events import (
    Authorized,
    ConnectionClosed,
    ConnectionOpened,
    ConnectionRefused,
    Lifecycle,
    Recovered,
    RecoveryFailed,
)
from ..core.state import ServerState, app_figures
from .loop_histogram import LoopHistogram

disable_created_metrics()  # the *_created samples only add noise to every scrape

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RECONNECT_WINDOW = 60.0
APP_LABELS = 50  # isolated apps labelled by their id in /metrics; the rest as "other"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)


def broadcast_histogram() -> LoopHistogram:
    """``echo_broadcast_seconds``, the one figure taken as messages go out (once per batch):
    built before the core, whose fan-out is given its ``observe`` at construction, and
    registered by `Metrics`, which needs the core to exist."""
    return LoopHistogram("echo_broadcast_seconds", "Source batch received to the last "
                         "recipient's frame written", _LATENCY_BUCKETS, None)


class Metrics:
    def __init__(self, state: ServerState, lifecycle: Lifecycle,
                 broadcast_seconds: LoopHistogram,
                 app_labels: int = APP_LABELS) -> None:
        """``broadcast_seconds``: from `broadcast_histogram`, the one the fan-out times."""
        self.state = state
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(ProcessCollector(registry=None))
        self.registry.register(_StateCollector(state, app_labels))
        self.registry.register(broadcast_seconds)
        r = self.registry
        self.connect_seconds = LoopHistogram(
            "echo_connect_seconds", "Engine.IO handshake to Socket.IO connected",
            _LATENCY_BUCKETS, r)
        self.reconnections = Counter(
            "echo_reconnections", "Connections from a client that disconnected within the last "
            "60 s (recognised by JWT subject or the EIO3 io cookie)", registry=r)
        self.disconnections = Counter(
            "echo_disconnections", "Disconnections by reason", ["reason"], registry=r)
        self.auth_requests = Counter(
            "echo_auth_requests", "Channel authorizations by result", ["result"], registry=r)
        self.auth_seconds = LoopHistogram(
            "echo_auth_seconds", "Channel authorization time", _LATENCY_BUCKETS, r)
        self.refused = Counter(
            "echo_connections_refused", "Connections refused at the handshake", registry=r)
        self.recoveries = Counter(
            "echo_recoveries", "Connection-state recoveries tried, by result (recovered, or "
            "why not)", ["result"], registry=r)
        self.recovered_packets = Counter(
            "echo_recovered_packets", "Missed packets sent to recovered connections", registry=r)
        self._recent: OrderedDict[str, float] = OrderedDict()
        lifecycle.on(ConnectionOpened, self.connected)
        lifecycle.on(ConnectionClosed, self.disconnected)
        lifecycle.on(ConnectionRefused, self.refused_connection)
        lifecycle.on(Authorized, self.authorized)
        lifecycle.on(Recovered, self.recovered)
        lifecycle.on(RecoveryFailed, self.recovery_failed)

    # -- hooks ------------------------------------------------------------------------
    def connected(self, event: ConnectionOpened) -> None:
        now = time.monotonic()
        self.connect_seconds.observe(now - event.since)
        identity = event.identity
        if identity is not None:
            self._forget_older_than(now - RECONNECT_WINDOW)
            if self._recent.pop(identity, None) is not None:
                self.reconnections.inc()

    def disconnected(self, event: ConnectionClosed) -> None:
        self.disconnections.labels(event.reason).inc()
        now = time.monotonic()
        for identity in event.identities:
            self._recent[identity] = now
            self._recent.move_to_end(identity)
        while len(self._recent) > 100_000:
            self._recent.popitem(last=False)

    def refused_connection(self, event: ConnectionRefused) -> None:
        self.refused.inc()

    def recovered(self, event: Recovered) -> None:
        self.recoveries.labels("recovered").inc()
        self.recovered_packets.inc(event.missed)

    def recovery_failed(self, event: RecoveryFailed) -> None:
        self.recoveries.labels(event.reason).inc()

    def authorized(self, event: Authorized) -> None:
        self.auth_seconds.observe(event.seconds)
        label = "allowed" if event.allowed else ("error" if event.status == 0 else "denied")
        self.auth_requests.labels(label).inc()

    def _forget_older_than(self, limit: float) -> None:
        recent = self._recent
        while recent:
            _identity, at = next(iter(recent.items()))
            if at >= limit:
                break
            recent.popitem(last=False)

    def render(self) -> bytes:
        """This process's figures alone (what a sibling worker asks for)."""
        return generate_latest(self.registry)

    async def render_server(self) -> bytes:
        """The whole server's: this process's, or every worker's under `--workers N`."""
        local = self.render()
        state = self.state
        if state.siblings is None or state.worker is None:
            return local
        answers = {state.worker: local, **await state.siblings("metrics")}
        return generate_latest(_WorkersCollector(answers))


def app_rows(figures: dict[str, list[int]], labels: int) -> dict[str, list[int]]:
    """Per-app rows under a bounded set of ``app_id`` labels: the default app (``default``)
    and the first ``labels`` other apps by id (sorted: a stable set from scrape to scrape,
    not one that churns with traffic); every app past them summed under ``other``."""
    rows: dict[str, list[int]] = {}
    named = 0
    for app_id in sorted(figures):
        label = app_id or DEFAULT_APP_LABEL  # no isolated app has either id (apps/model.py)
        if app_id:
            named += 1
            if named > labels:
                label = OTHER_APPS_LABEL
        row = rows.setdefault(label, [0, 0, 0])
        for index, value in enumerate(figures[app_id]):
            row[index] += value
    return rows


class _StateCollector:
    """Figures read at scrape time from what the server keeps anyway."""

    def __init__(self, state: ServerState, app_labels: int = APP_LABELS) -> None:
        self.state = state
        self.app_labels = app_labels

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        state = self.state
        connections = GaugeMetricFamily("echo_connections", "Open connections",
                                        labels=["protocol", "transport"])
        kinds = state.connections_by_kind()
        for protocol in ("eio3", "eio4", "pusher"):
            for transport in ("websocket", "polling"):
                connections.add_metric([protocol, transport], kinds.get((protocol, transport), 0))
        yield connections
        counts = state.local_channel_counts()
        yield GaugeMetricFamily("echo_channels", "Channels with at least one local socket",
                                value=len(counts))
        yield GaugeMetricFamily("echo_subscriptions", "Socket-channel subscriptions",
                                value=sum(counts.values()))
        per_app = [GaugeMetricFamily(f"echo_app_{name}", text, labels=["app_id"])
                   for name, text in (("connections", "Open connections of each app"),
                                      ("channels", "Channels of each app with a local socket"),
                                      ("subscriptions", "Subscriptions of each app"))]
        apps = app_figures(state.local_app_connections(), counts)
        for label, row in app_rows(apps, self.app_labels).items():
            for family, value in zip(per_app, row, strict=True):
                family.add_metric([label], value)
        yield from per_app
        sessions, subscriptions = state.parked()
        yield GaugeMetricFamily("echo_parked_sessions",
                                "Dropped connections held for a recovery",
                                value=sessions)
        yield GaugeMetricFamily("echo_parked_subscriptions",
                                "Subscriptions of dropped connections held for a recovery",
                                value=subscriptions)
        yield GaugeMetricFamily("echo_presence_members",
                                "Presence memberships of local sockets",
                                value=state.presence_memberships())
        received = CounterMetricFamily("echo_events_received", "Events received by source",
                                       labels=["source"])
        health = GaugeMetricFamily("echo_source_up", "1 when the event source is connected",
                                   labels=["source", "url"])
        outages = CounterMetricFamily("echo_source_outages", "Times the source went away",
                                      labels=["source", "url"])
        per_kind: dict[str, int] = {}  # several sources may share a kind (two redis:// URLs)
        for h in state.sources():
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
                                  value=state.delivered())
        if state.webhooks is not None:
            figures = state.webhooks()
            for name, help_text in (
                    ("sent", "Webhook batches a receiver took (2xx in time)"),
                    ("failed", "Webhook attempts that got no 2xx in time"),
                    ("retried", "Webhook attempts after a failure"),
                    ("dropped_batches", "Webhook batches given up after retryForMs"),
                    ("dropped_events", "Webhook events given up, or refused by a full queue"),
                    ("delivery_seconds", "Time of the successful webhook POSTs, summed")):
                yield CounterMetricFamily(f"echo_webhooks_{name}", help_text,
                                          value=figures[name])
            yield GaugeMetricFamily("echo_webhooks_queued", "Webhook events waiting for their "
                                    "endpoint (this instance's view of each queue)",
                                    value=figures["queued"])
        errors = CounterMetricFamily("echo_errors", "Bad input and failures by kind",
                                     labels=["kind"])
        for kind, count in sorted(state.errors.counts.items()):
            errors.add_metric([kind], count)
        yield errors


class _WorkersCollector:
    """Every worker's exposition as one: each sample labelled with its worker's slot, the
    families of the same name merged (a family may appear once in a scrape)."""

    def __init__(self, answers: dict[int, bytes | None]) -> None:
        self.answers = answers

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("echo_worker_up", "1 when the worker answered this scrape",
                               labels=["worker"])
        families: dict[str, Metric] = {}
        for slot, text in sorted(self.answers.items()):
            up.add_metric([str(slot)], 0 if text is None else 1)
            for family in text_string_to_metric_families((text or b"").decode()):
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type))
                merged.samples += [sample._replace(labels={**sample.labels, "worker": str(slot)})
                                   for sample in family.samples]
        yield up
        yield from families.values()


def metrics_token_ok(token: str | None, headers: dict[str, str], query: dict[str, str]) -> bool:
    if not token:
        return True
    auth = headers.get("authorization", "")
    given = auth[7:] if auth[:7].lower() == "bearer " else query.get("token")
    return given is not None and same_secret(given, token)


__all__ = ["CONTENT_TYPE", "Metrics", "metrics_token_ok"]
