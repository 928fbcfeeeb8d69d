"""``GET /status``: a live dashboard for the admins who run the server; ``/status.json`` feeds it.

The page is one static, self-contained HTML file (inline CSS/JS and SVG, no CDN, no build
step) that polls ``/status.json`` every second with the credential it was opened with. Rates
and the chart come from a small history that one ``loop.call_later`` timer samples every
``metrics.sampleInterval``: nothing runs per message or per viewer, and a page nobody watches
costs one timer tick. Figures are read from what the server keeps anyway (state layer, hub
total, error log, source health), like ``/metrics``.

Access needs a credential because channel names and presence counts describe the app's users:
any configured app key (``?auth_key=`` or ``Authorization: Bearer``, as the HTTP API takes it)
or the metrics token (``?token=`` or Bearer).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import heapq
import math
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from itertools import pairwise
from typing import Any, NamedTuple

from echo_common.jsoncodec import dumps, loads
from echo_common.signing import same_secret

from ..apps.tags import app_tag, untagged
from ..core.state import ServerState, app_figures
from ..transport.http import Request, Response
from . import PACKAGE_STATIC

HTML_PATH = PACKAGE_STATIC / "status.html"
HISTORY_SECONDS = 600.0  # the chart's reach: the last ten minutes
MAX_SAMPLES = 6000  # bounds memory whatever sampleInterval says (10 min at 100 ms)
MAX_POINTS = 300  # history points per /status.json answer (downsampled beyond that)
RATE_WINDOW = 1.0  # seconds the "per second" figures average over, at least one sample
TOP_CHANNELS = 25
TOP_PRESENCE = 25  # bounded: each presence channel may cost a Redis round trip

# Nothing from elsewhere may run in the page, and its URL (which may carry a key) must not
# leak through a Referer.
_SECURITY_HEADERS = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
]
_FORBIDDEN_HTML = (b"<!doctype html><meta charset=utf-8><title>echo-server status</title>"
                   b"<p>403: open this page with an app key (<code>?auth_key=</code>) or the "
                   b"metrics token (<code>?token=</code>).</p>\n")


class Sample(NamedTuple):
    at: float  # loop time (monotonic)
    connections: int
    delivered: int  # messages written to clients, running total
    events: int  # events received from every source, running total


def _named(channel: str) -> dict[str, str]:
    """A channel as its app's clients know it, and, for an isolated app's, that app."""
    tag = app_tag(channel)
    return {"name": untagged(channel), "app": tag[1:]} if tag else {"name": channel}


def _busiest_first(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


class StatusPage:
    PATHS = frozenset({"/status", "/status.json"})

    def __init__(self, state: ServerState, credentials: Callable[[], list[str]],
                 sample_interval: float = 1.0) -> None:
        self.state = state
        self.credentials = credentials  # the app keys and the metrics token, as configured
        self.sample_interval = max(0.01, float(sample_interval))
        size = min(MAX_SAMPLES, math.ceil(HISTORY_SECONDS / self.sample_interval) + 1)
        self.history: deque[Sample] = deque(maxlen=max(2, size))
        self._timer: asyncio.TimerHandle | None = None
        self._html: tuple[bytes, str] | None = None

    # -- sampler ------------------------------------------------------------------
    def start(self) -> None:
        """Take the first sample now so rates have a baseline before the first tick."""
        if self._timer is None:
            self._tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        self.history.append(self._sample(loop.time()))
        self._timer = loop.call_later(self.sample_interval, self._tick)

    def _sample(self, at: float) -> Sample:
        state = self.state
        return Sample(at, state.local_connections(), state.delivered(),
                      sum(source.events for source in state.sources()))

    # -- access -------------------------------------------------------------------
    def authorized(self, request: Request) -> bool:
        """Any configured app key or the metrics token, as Bearer or in the query."""
        header = request.headers.get("authorization", "")
        given = [header[7:].strip()] if header[:7].lower() == "bearer " else []
        given += [request.query.get("auth_key", ""), request.query.get("token", "")]
        accepted = self.credentials()
        return any(same_secret(g, a) for g in given if g for a in accepted)

    # -- routes -------------------------------------------------------------------
    def handle(self, request: Request) -> Response | Awaitable[Response]:
        as_json = request.path == "/status.json"
        if request.method != "GET":  # not HEAD: the HTTP layer would send a body anyway
            return Response(405, b"", [*_SECURITY_HEADERS, ("Allow", "GET")],
                            "text/plain; charset=utf-8")
        if not self.authorized(request):
            if as_json:
                return Response(403, b'{"error":"Unauthorized"}', list(_SECURITY_HEADERS),
                                "application/json; charset=utf-8")
            return Response(403, _FORBIDDEN_HTML, list(_SECURITY_HEADERS))
        if as_json:
            return self._json()
        html, csp = self.html()
        return Response(200, html, [*_SECURITY_HEADERS, ("Content-Security-Policy", csp)])

    def html(self) -> tuple[bytes, str]:
        """The page and its Content-Security-Policy, built once: the page is static.

        The policy allows exactly the page's own inline script and style (by hash), so even a
        value that slipped into the DOM as markup could not run, and nothing is fetched from
        anywhere but this server.
        """
        if self._html is None:
            html = HTML_PATH.read_bytes()
            hashes = {tag: " ".join(
                "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
                for body in re.findall(rb"<" + tag + rb">(.*?)</" + tag + rb">", html, re.S))
                for tag in (b"script", b"style")}
            csp = (f"default-src 'none'; script-src {hashes[b'script']}; "
                   f"style-src {hashes[b'style']}; connect-src 'self'; img-src data:; "
                   "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
            self._html = (html, csp)
        return self._html

    async def _json(self) -> Response:
        body = await self.snapshot()
        return Response(200, dumps(body).encode("utf-8"), list(_SECURITY_HEADERS),
                        "application/json; charset=utf-8")

    # -- figures --------------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        """This process's own figures, as plain JSON: under `--workers N` each worker's are
        added up into the page (a sibling asks for them through `figures_json`)."""
        state = self.state
        now = asyncio.get_running_loop().time()
        live = self._sample(now)
        return {
            "worker": state.worker,
            "instance": state.instance_id,
            "uptime": round(state.uptime(), 3),
            "connections": live.connections,
            "byKind": [[protocol, transport, count] for (protocol, transport), count
                       in sorted(state.connections_by_kind().items())],
            "rates": self._rates(live),
            "totals": [live.delivered, live.events],
            "channels": state.local_channel_counts(),
            "apps": state.local_app_connections(),  # channels: from the merged counts
            "memberships": state.presence_memberships(),
            "errors": dict(state.errors.counts),
            "sources": [{
                "kind": source.kind,
                "url": source.url,  # display_url: never the password
                "connected": source.connected,
                "outages": source.outages,
                "lastError": source.last_error,
                "events": source.events,
                "since": round(now - source.since, 3) if source.since else None,
                **({} if state.worker is None else {"worker": state.worker}),
            } for source in state.sources()],
            "points": self._points(now),
        }

    def figures_json(self) -> bytes:
        return dumps(self.figures()).encode("utf-8")

    async def snapshot(self) -> dict[str, Any]:
        """Everything the page and ``echo-server status`` show, as plain JSON: the whole
        server's, every worker's figures added up under `--workers N`."""
        state = self.state
        own = self.figures()
        workers = [own]
        missing: list[int] = []
        if state.siblings is not None:
            for slot, answer in sorted((await state.siblings("status")).items()):
                if answer is None:
                    missing.append(slot)
                else:
                    workers.append(loads(answer))
        kinds: Counter[tuple[str, str]] = Counter()
        counts: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        app_connections: Counter[str] = Counter()
        for figures in workers:
            app_connections.update(figures.get("apps", {}))
            kinds.update({(protocol, transport): count
                          for protocol, transport, count in figures["byKind"]})
            counts.update(figures["channels"])
            errors.update(figures["errors"])
        # Only the top rows are shown: no full sort of what may be 100k channels, every second.
        ranked = heapq.nsmallest(TOP_CHANNELS, counts.items(), key=_busiest_first)
        presence_counts = [(n, c) for n, c in counts.items() if n.startswith("presence-")]
        presence = []
        for name, _ in heapq.nsmallest(TOP_PRESENCE, presence_counts, key=_busiest_first):
            members = await state.presence_members(name)
            presence.append({**_named(name), "members": len(members),
                             "subscribers": counts.get(name, 0)})
        snapshot: dict[str, Any] = {
            "time": time.time(),
            "uptime": own["uptime"],
            "instance": state.instance_id,
            "sampleInterval": self.sample_interval,
            "connections": {
                "total": sum(f["connections"] for f in workers),
                "byKind": [{"protocol": protocol, "transport": transport, "count": count}
                           for (protocol, transport), count in sorted(kinds.items())],
            },
            "rates": {"messagesPerSecond": round(sum(f["rates"][0] for f in workers), 2),
                      "eventsPerSecond": round(sum(f["rates"][1] for f in workers), 2)},
            "totals": {"delivered": sum(f["totals"][0] for f in workers),
                       "events": sum(f["totals"][1] for f in workers)},
            "channels": {
                "total": len(counts),
                "subscriptions": sum(counts.values()),
                "top": [{**_named(name), "subscribers": count} for name, count in ranked],
            },
            # Every app with a connection or a channel here ("" is the default app's).
            "apps": [{"id": app_id, "connections": row[0], "channels": row[1],
                      "subscriptions": row[2]}
                     for app_id, row in sorted(app_figures(app_connections, counts).items())],
            "presence": {
                "channels": len(presence_counts),
                "memberships": sum(f["memberships"] for f in workers),
                "top": presence,
            },
            "errors": dict(sorted(errors.items())),
            "sources": [source for f in workers for source in f["sources"]],
            "history": {"window": HISTORY_SECONDS,
                        "points": _add_up([f["points"] for f in workers])},
        }
        if state.worker is not None:
            snapshot["workers"] = sorted(
                [{"worker": f["worker"], "instance": f["instance"], "up": True,
                  "uptime": f["uptime"], "connections": f["connections"],
                  "messagesPerSecond": f["rates"][0], "eventsPerSecond": f["rates"][1]}
                 for f in workers] + [{"worker": slot, "up": False} for slot in missing],
                key=lambda row: row["worker"])
        return snapshot

    def _rates(self, live: Sample) -> list[float]:
        """Per second over the newest ``RATE_WINDOW`` of samples (live figures at the end)."""
        history = self.history
        if not history:
            return [0.0, 0.0]
        base = history[0]
        for sample in reversed(history):
            if live.at - sample.at >= RATE_WINDOW:
                base = sample
                break
        span = live.at - base.at
        if span <= 0:
            return [0.0, 0.0]
        return [round((live.delivered - base.delivered) / span, 2),
                round((live.events - base.events) / span, 2)]

    def _points(self, now: float) -> list[list[float]]:
        """``[seconds ago, connections, messages/s, events/s]``, oldest first, at most
        ``MAX_POINTS`` (every n-th sample, rates averaged over the gap they cover)."""
        samples = list(self.history)
        if len(samples) < 2:
            return []
        stride = max(1, math.ceil((len(samples) - 1) / MAX_POINTS))
        picked = samples[len(samples) - 1::-stride][::-1]
        points = []
        for before, after in pairwise(picked):
            span = after.at - before.at
            if span <= 0:
                continue
            points.append([round(after.at - now, 3), after.connections,
                           round((after.delivered - before.delivered) / span, 2),
                           round((after.events - before.events) / span, 2)])
        return points


def _add_up(histories: list[list[list[float]]]) -> list[list[float]]:
    """The workers' charts as one: they sample on the same interval, so their points are
    paired from the newest back; a restarted worker's shorter history adds to the recent end."""
    longest = max(histories, key=len)
    total = [list(point) for point in longest]
    for history in histories:
        if history is longest:
            continue
        for point, other in zip(reversed(total), reversed(history), strict=False):
            for field in (1, 2, 3):
                point[field] = round(point[field] + other[field], 2)
    return total


__all__ = ["StatusPage"]
