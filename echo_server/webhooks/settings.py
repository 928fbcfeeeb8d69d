"""Webhook endpoints, from the ``clients`` entries of laravel-echo-server.json (Soketi's
names: ``secret`` next to ``key``, ``webhooks: [{url, event_types, filter, headers}]``),
and the delivery settings (the ``webhooks`` object: batching, timeout, retries, bounds)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

EVENT_TYPES = ("channel_occupied", "channel_vacated", "member_added", "member_removed",
               "client_event", "cache_miss")
MAX_HEADERS = 32


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

    @property
    def ident(self) -> str:
        """Stable across instances and restarts: names the endpoint's queue in Redis."""
        return hashlib.sha256(f"{self.app_id}\n{self.url}".encode()).hexdigest()[:20]

    def wants(self, name: str, channel: str) -> bool:
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


class WebhookConfigError(ValueError):
    pass


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise WebhookConfigError(f"{where} must be a string")
    return value


def _number(section: Mapping[str, Any], key: str, default: float, *, integer: bool = False,
            scale: float = 1.0) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0 or (
            integer and not isinstance(value, int)):
        raise WebhookConfigError(f"webhooks.{key} must be a positive "
                                 f"{'integer' if integer else 'number'}, not {value!r}")
    return value * scale


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
        batch_ms=_number(section, "batchMs", 250.0),
        batch_size=int(_number(section, "batchSize", 20, integer=True)),
        timeout=_number(section, "timeoutMs", 4000, scale=0.001),
        retry_for=_number(section, "retryForMs", 300_000, scale=0.001),
        retry_base=_number(section, "retryBaseMs", 1000, scale=0.001),
        retry_max=_number(section, "retryMaxMs", 60_000, scale=0.001),
        max_queue=int(_number(section, "maxQueue", 10_000, integer=True)),
        poll=_number(section, "pollMs", 100, scale=0.001),
    )


def endpoints(clients: list[Any]) -> list[Endpoint]:
    """Every endpoint of every app entry; a clear error for anything malformed."""
    found: list[Endpoint] = []
    for index, client in enumerate(clients):
        hooks = client.get("webhooks") if isinstance(client, dict) else None
        if hooks is None:
            continue
        where = f"clients[{index}].webhooks"
        if not isinstance(hooks, list):
            raise WebhookConfigError(f"{where} must be a list")
        secret = client.get("secret")
        if not isinstance(secret, str) or not secret:
            raise WebhookConfigError(f"clients[{index}] has webhooks but no `secret` to sign "
                                     "them with (Pusher's app secret)")
        for number, hook in enumerate(hooks):
            found.append(_endpoint(client, secret, hook, f"{where}[{number}]"))
    return found


def _endpoint(client: dict[str, Any], secret: str, hook: Any, where: str) -> Endpoint:
    if not isinstance(hook, dict):
        raise WebhookConfigError(f"{where} must be an object")
    unknown = sorted(set(hook) - {"url", "event_types", "filter", "headers"})
    if unknown:
        raise WebhookConfigError(f"{where}: unknown key(s) {unknown}")
    url = _text(hook.get("url"), f"{where}.url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookConfigError(f"{where}.url must be an http(s) URL, not {url!r}")
    types = hook.get("event_types", list(EVENT_TYPES))
    if not isinstance(types, list) or not types or any(t not in EVENT_TYPES for t in types):
        raise WebhookConfigError(f"{where}.event_types must be a list of {list(EVENT_TYPES)}")
    flt = hook.get("filter") or {}
    if not isinstance(flt, dict) or set(flt) - {"channel_name_starts_with",
                                                 "channel_name_ends_with"}:
        raise WebhookConfigError(f"{where}.filter takes channel_name_starts_with and "
                                 "channel_name_ends_with")
    headers = hook.get("headers") or {}
    if not isinstance(headers, dict) or len(headers) > MAX_HEADERS or not all(
            isinstance(k, str) and isinstance(v, str) and "\n" not in k + v and "\r" not in k + v
            for k, v in headers.items()):
        raise WebhookConfigError(f"{where}.headers must be an object of at most {MAX_HEADERS} "
                                 "string values without line breaks")
    return Endpoint(
        app_id=str(client.get("appId")), key=str(client.get("key")), secret=secret, url=url,
        event_types=frozenset(types),
        starts_with=_text(flt.get("channel_name_starts_with", ""),
                          f"{where}.filter.channel_name_starts_with"),
        ends_with=_text(flt.get("channel_name_ends_with", ""),
                        f"{where}.filter.channel_name_ends_with"),
        headers=tuple(headers.items()))
