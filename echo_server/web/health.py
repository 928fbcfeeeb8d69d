"""``GET /healthz`` and ``GET /readyz``, for orchestrators (Kubernetes probes, load balancers).

``/healthz`` is liveness: it answers 200 whenever the process can answer at all, so a restart
is only ever asked for a process that is stuck. ``/readyz`` is readiness: 200 while serving,
503 while starting (Redis presence, the cluster layer and the sources are being set up) or
draining (SIGTERM received: the orchestrator takes the instance out of its endpoints before
its clients are closed). The health of the event sources and of the cluster's Redis is in
the body, never in the status: when Redis blips, every instance would otherwise leave the
load balancer at once, while each one still serves its clients and the HTTP API's in-memory
bus. Neither needs a credential: the body names the sources (URLs without passwords) and
nothing about channels or users, and probes cannot carry a key.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable
from typing import Any

from echo_common.jsoncodec import dumps

from ..core.presence import RedisPresenceStore
from ..core.state import ServerState
from ..transport.http import Request, Response

CHECK_TIMEOUT = 0.5  # seconds the cluster's Redis gets to answer a readiness probe
_HEADERS = [("Cache-Control", "no-store")]


class Phase(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"


class Health:
    PATHS = frozenset({"/healthz", "/readyz"})

    def __init__(self, state: ServerState, *, check_timeout: float = CHECK_TIMEOUT) -> None:
        self.state = state
        self.check_timeout = check_timeout
        self.phase = Phase.STARTING  # the server moves it on

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        if request.path == "/healthz":
            return _json(200, {"status": "ok", "phase": self.phase.value})
        return self._ready()

    async def _ready(self) -> Response:
        state = self.state
        body: dict[str, Any] = {
            "status": self.phase.value,
            "instance": state.instance_id,
            "uptime": round(state.uptime(), 3),
            "sources": [{"kind": s.kind, "url": s.url, "connected": s.connected,
                         "lastError": None if s.connected else s.last_error}
                        for s in state.sources()],
            "presence": ("redis" if isinstance(state.core.presence.store, RedisPresenceStore)
                         else "memory"),
            "cluster": await self._cluster(),
            "recovery": self._recovery(),
        }
        return _json(200 if self.phase is Phase.SERVING else 503, body)

    def _recovery(self) -> str:
        """Where a dropped client can come back whole (README: Recovery): "off", "instance"
        (this one: sticky set-ups), "any" (a Redis stream as the only source). The shared
        sessions exist from construction on, but run only once this instance is in the
        cluster (its whispers and API publishes marked in Redis): a Redis that did not
        answer at start leaves it out for its whole life, so "instance"."""
        core = self.state.core
        if core.sessions is None:
            return "off"
        return "any" if core.shared is not None and core.shared.running else "instance"

    async def _cluster(self) -> dict[str, Any] | None:
        """Whether the Redis the instances share answers now (one read of the live
        instances, bounded by ``check_timeout``); None when this instance runs alone."""
        peers = self.state.peers
        if peers is None:
            return None
        try:
            others = await asyncio.wait_for(peers(), self.check_timeout)
        except Exception as exc:  # the driver's errors, the timeout: Redis is not answering
            return {"reachable": False, "error": f"{type(exc).__name__}: {exc}".rstrip(": ")}
        return {"reachable": True, "instances": len(others) + 1}


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status, dumps(body).encode("utf-8"), list(_HEADERS),
                    "application/json; charset=utf-8")
