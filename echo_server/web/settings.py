"""The HTTP side's part of ``laravel-echo-server.json``: ``/metrics`` and the status page
(``metrics``), ``/readyz`` and the drain (``health``), and what the API adds to its answers
(``apiOriginAllow``, ``headers``)."""

from __future__ import annotations

from typing import Any

from echo_common.values import js_string, milliseconds, section


class WebSettings:
    """The HTTP side's options, as properties of ``Config``."""

    raw: dict[str, Any]

    def _metrics(self, key: str, default: Any) -> Any:
        return section(self.raw, "metrics").get(key, default)

    @property
    def metrics_enabled(self) -> bool:
        """Ours: ``metrics.enabled`` (default true) serves ``GET /metrics``."""
        return self._metrics("enabled", True) is not False

    @property
    def metrics_token(self) -> str | None:
        """Ours: a token ``/metrics`` and the status page accept (Bearer or ``?token=``)."""
        token = self._metrics("token", None)
        return str(token) if token else None

    @property
    def status_sample_interval(self) -> float:
        """Ours: how often the status page's history is sampled (ms, default 1000)."""
        return max(0.01, milliseconds(self._metrics("sampleInterval", 1000),
                                      "metrics.sampleInterval"))

    def _health(self, key: str, default: float) -> float:
        return milliseconds(section(self.raw, "health").get(key, default), f"health.{key}")

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
    def api_origin_allow(self) -> dict[str, Any]:
        value = self.raw.get("apiOriginAllow")
        return value if isinstance(value, dict) else {}

    @property
    def extra_headers(self) -> dict[str, str]:
        value = self.raw.get("headers")
        return {str(k): js_string(v) for k, v in value.items()} if isinstance(value, dict) else {}
