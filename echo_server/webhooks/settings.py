"""Webhook endpoints, one per app and URL (each app's ``webhooks``, parsed by the app model
with Soketi's names: ``[{url, event_types, filter, headers}]``, signed with its ``secret``),
and the delivery settings (the top-level ``webhooks`` object: batching, timeout, retries,
bounds)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from echo_common.values import positive_number

from ..apps.model import App


@dataclass(frozen=True, slots=True)
class Endpoint:
    app_id: str
    key: str
    secret: str
    url: str
    event_types: frozenset[str]
    starts_with: str
    ends_with: str
    headers: tuple[tuple[str, str], ...]
    tag: str = ""  # its app's channel tag (apps/tags.py): it hears only that app's channels
    # Stable across instances and restarts: names the endpoint's queue in Redis. Hashed once
    # here: the dispatcher reads it whenever an app's endpoints are (re)applied.
    ident: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ident", hashlib.sha256(
            f"{self.app_id}\n{self.url}".encode()).hexdigest()[:20])

    def wants(self, name: str, channel: str) -> bool:
        """``channel`` as its app's clients know it (untagged): the dispatcher hands an event
        only to the endpoints of its channel's app (by ``tag``)."""
        return (name in self.event_types and channel.startswith(self.starts_with)
                and channel.endswith(self.ends_with))


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    batch_ms: float = 250.0  # a batch goes when its first event is this old...
    batch_size: int = 20  # ...or when it has this many
    timeout: float = 4.0  # a 2xx within this is success
    retry_for: float = 300.0  # then a batch still failing is dropped, counted and logged
    retry_base: float = 1.0
    retry_max: float = 60.0
    max_queue: int = 10_000  # events waiting per endpoint; more are dropped and counted
    poll: float = 0.1  # how often a sender looks for due events


_DEFAULT = DeliverySettings()  # each default written once, above


class WebhookConfigError(ValueError):
    pass


def _number(section: Mapping[str, Any], key: str, default: float, *, integer: bool = False,
            scale: float = 1.0) -> float:
    return positive_number(section, key, default, f"webhooks.{key}", integer=integer,
                           scale=scale, error=WebhookConfigError)


def delivery_settings(section: Any) -> DeliverySettings:
    if section is None:
        return DeliverySettings()
    if not isinstance(section, dict):
        raise WebhookConfigError("`webhooks` must be an object")
    known = {"batchMs", "batchSize", "timeoutMs", "retryForMs", "retryBaseMs", "retryMaxMs",
             "maxQueue", "pollMs"}
    unknown = sorted(set(section) - known)
    if unknown:
        raise WebhookConfigError(f"webhooks: unknown key(s) {unknown}; known: {sorted(known)}")
    return DeliverySettings(
        batch_ms=_number(section, "batchMs", _DEFAULT.batch_ms),
        batch_size=int(_number(section, "batchSize", _DEFAULT.batch_size, integer=True)),
        timeout=_number(section, "timeoutMs", _DEFAULT.timeout * 1000, scale=0.001),
        retry_for=_number(section, "retryForMs", _DEFAULT.retry_for * 1000, scale=0.001),
        retry_base=_number(section, "retryBaseMs", _DEFAULT.retry_base * 1000, scale=0.001),
        retry_max=_number(section, "retryMaxMs", _DEFAULT.retry_max * 1000, scale=0.001),
        max_queue=int(_number(section, "maxQueue", _DEFAULT.max_queue, integer=True)),
        poll=_number(section, "pollMs", _DEFAULT.poll * 1000, scale=0.001),
    )


def endpoints(apps: Iterable[App]) -> list[Endpoint]:
    """Every endpoint of every app, in order; the app model validated them already."""
    return [Endpoint(app_id=app.id, key=app.key, secret=app.secret, url=hook.url,
                     event_types=hook.event_types, starts_with=hook.starts_with,
                     ends_with=hook.ends_with, headers=hook.headers, tag=app.tag)
            for app in apps for hook in app.webhooks]
