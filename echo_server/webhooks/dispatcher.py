"""The core's lifecycle events, as Pusher's webhook events, to every endpoint that wants
them: each event is encoded once and appended to the queues of the endpoints whose types
and channel filter admit it (Soketi signs the filtered batch but sends the unfiltered one;
here each endpoint's batch is built from its own queue, and signed as sent).

A ``member_removed`` and a ``channel_vacated`` wait for the presence grace: if the same user
joins the channel again within it (a page reload: the old page's socket closes, the new one
joins), neither the removal nor the new ``member_added`` is sent (nor ``vacated`` and the new
``occupied``), so the app does not see an admin go offline and come back for every reload.
Once the grace is over they go in Pusher's order: the members, then the channel. (Per
instance: a return that lands on another instance is told.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from echo_common.http_client import outgoing_session
from echo_common.jsoncodec import dumps

from ..apps.model import App
from ..apps.tags import app_tag, untagged
from ..core.events import (
    CacheMiss,
    ChannelOccupied,
    ChannelVacated,
    ClientEvent,
    Lifecycle,
    MemberAdded,
    MemberRemoved,
)
from ..core.presence import user_key
from .queue import MemoryQueue, RedisQueue
from .sender import Sender, WebhookStats
from .settings import DeliverySettings, Endpoint
from .settings import endpoints as app_endpoints

log = logging.getLogger("echo_server.webhooks")
MAX_SEEN_APPS = 10_000  # database apps whose webhooks are kept


def _user_id(value: Any) -> str:
    """Pusher's user ids are strings (pusher-php-server compares them as such)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return dumps(value)
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


@dataclass(slots=True)
class _Target:
    endpoint: Endpoint
    queue: MemoryQueue | RedisQueue
    sender: Sender


class Webhooks:
    def __init__(self, endpoints: list[Endpoint], settings: DeliverySettings,
                 lifecycle: Lifecycle, presence_grace: float = 0.0) -> None:
        # The file's, by ident; the database's apps' come as seen
        self._configured = {endpoint.ident: endpoint for endpoint in endpoints}
        self._seen: dict[str, App] = {}  # database apps by id, as last seen
        self.settings = settings
        self.lifecycle = lifecycle
        self.presence_grace = presence_grace
        # (channel, user) -> a member_removed waiting out the grace, and its timer; (channel,
        # None) -> a channel_vacated
        self._leaving: dict[tuple[str, str | None],
                            tuple[dict[str, Any], asyncio.TimerHandle]] = {}
        self.stats = WebhookStats()
        self._targets: dict[str, _Target] = {}  # by endpoint ident
        # The same, by their app's tag: an event visits only its channel's app's endpoints.
        self._by_tag: dict[str, dict[str, _Target]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._shared: tuple[Any, str, str] | None = None  # Redis client, tag, instance id
        self._closing: set[asyncio.Future[None]] = set()
        self._listening: set[str] = set()
        self._listen(endpoints)

    def _listen(self, endpoints: Iterable[Endpoint]) -> None:
        """Hear the event kinds some endpoint wants (nobody asked: the core does not even
        build the event)."""
        # Each listener takes its own kind of event: the pairs match, the dict's type cannot say.
        listeners: dict[str, tuple[type[Any], Callable[[Any], None]]] = {
            "channel_occupied": (ChannelOccupied, self._occupied),
            "channel_vacated": (ChannelVacated, self._vacated),
            "member_added": (MemberAdded, self._member_added),
            "member_removed": (MemberRemoved, self._member_removed),
            "client_event": (ClientEvent, self._client_event),
            "cache_miss": (CacheMiss, self._cache_miss)}
        wanted = {name for endpoint in endpoints for name in endpoint.event_types}
        for name in sorted(wanted - self._listening):
            kind, listener = listeners[name]
            self.lifecycle.on(kind, listener)
            self._listening.add(name)

    def start(self, redis: Any = None, tag: str = "", instance_id: str = "") -> None:
        """Queues in Redis when a client is given (every instance delivers any instance's
        batches), in memory otherwise."""
        self._shared = (redis, tag, instance_id)
        self._apply(self._wanted())

    def _open(self, endpoint: Endpoint) -> None:
        assert self._shared is not None
        redis, tag, instance_id = self._shared
        if self._session is None:
            self._session = outgoing_session()
        queue: MemoryQueue | RedisQueue = (
            MemoryQueue(self.settings) if redis is None else
            RedisQueue(self.settings, redis, f"{tag}:webhooks:{endpoint.ident}", instance_id))
        sender = Sender(endpoint, queue, self.settings, self._session, self.stats)
        sender.start()
        target = self._targets[endpoint.ident] = _Target(endpoint, queue, sender)
        self._group(target, True)

    def _group(self, target: _Target, joins: bool) -> None:
        """Into (or out of) the group of its endpoint's tag."""
        tag, ident = target.endpoint.tag, target.endpoint.ident
        if joins:
            self._by_tag.setdefault(tag, {})[ident] = target
            return
        group = self._by_tag[tag]
        del group[ident]
        if not group:
            del self._by_tag[tag]

    def app_seen(self, app: App) -> None:
        """A database app admitted a client (or changed while it had some): its webhooks
        from now on, as the row says now. Nothing to do for one seen as it is; otherwise
        only its endpoints (and those of the app it pushes out) are touched, not every
        seen app's."""
        before = self._seen.get(app.id)
        if before is app:
            return
        touched = [before] if before is not None else []
        if len(self._seen) >= MAX_SEEN_APPS:  # bounded: the oldest seen go first
            touched.append(self._seen.pop(next(iter(self._seen))))
        self._seen[app.id] = app
        now = app_endpoints([app])
        self._listen(now)
        # An endpoint no seen app names any more falls back to the file's (if it names it):
        # idents hash the app id, so no other seen app can name it.
        wanted: dict[str, Endpoint | None] = {
            endpoint.ident: self._configured.get(endpoint.ident)
            for endpoint in app_endpoints(touched)}
        wanted.update((endpoint.ident, endpoint) for endpoint in now)
        self._apply(wanted)

    def reconfigure(self, endpoints: list[Endpoint]) -> None:
        """A configuration reload: new endpoints start, removed ones stop (what their memory
        queue still held is counted as dropped; a Redis queue waits there for a restart that
        names the endpoint again), and a changed secret, filter or header set takes effect
        for the next batch. No await: the swap is whole. ``endpoints``: the file's; the
        database's apps seen so far keep theirs."""
        self._configured = {endpoint.ident: endpoint for endpoint in endpoints}
        wanted = self._wanted()
        self._listen(wanted.values())
        self._apply({**dict.fromkeys(self._targets), **wanted})

    def _wanted(self) -> dict[str, Endpoint]:
        """Every endpoint by ident: the file's, then the seen apps' (which win)."""
        return {**self._configured,
                **{endpoint.ident: endpoint for endpoint in app_endpoints(self._seen.values())}}

    def _apply(self, wanted: Mapping[str, Endpoint | None]) -> None:
        """Each of these endpoints as now wanted (None: not any more): opened, stopped, or
        given its new secret, filter and headers. Not started: ``start`` opens them."""
        if self._shared is None:
            return
        for ident, endpoint in wanted.items():
            target = self._targets.get(ident)
            if endpoint is None:
                if target is not None:
                    del self._targets[ident]
                    self._group(target, False)
                    task = asyncio.ensure_future(self._close(target))
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)
            elif target is None:
                self._open(endpoint)
            else:  # its app's tag may be another now (a reload moved it)
                self._group(target, False)
                target.endpoint = target.sender.endpoint = endpoint
                self._group(target, True)

    async def _close(self, target: _Target) -> None:
        await target.sender.stop()
        await target.queue.close()
        if isinstance(target.queue, MemoryQueue):
            left = await target.queue.length()
            if left:
                self.stats.dropped_events += left
                log.warning("webhooks for %s: %d events not delivered (the endpoint is gone "
                            "from the configuration, or the server stops, with no Redis to "
                            "keep them for another instance)", target.endpoint.url, left)

    async def stop(self) -> None:
        for key in list(self._leaving):  # the process ends: nobody comes back to it
            self._removed_for_good(key)
        for target in self._targets.values():
            await self._close(target)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        self._targets, self._by_tag, self._session = {}, {}, None

    def figures(self) -> dict[str, float]:
        """For /metrics: counters since start."""
        stats = self.stats
        refused = sum(t.queue.dropped for t in self._targets.values())  # by a full queue
        return {"sent": stats.sent, "failed": stats.failed, "retried": stats.retried,
                "dropped_batches": stats.dropped_batches,
                "dropped_events": stats.dropped_events + refused,
                "queued": sum(t.queue.waiting for t in self._targets.values()),
                "delivery_seconds": stats.delivery_seconds}

    # -- lifecycle events -> Pusher's ------------------------------------------------------
    def _add(self, name: str, channel: str, event: dict[str, Any]) -> None:
        """``channel`` as the core holds it; only its app's endpoints hear it, under the name
        its clients know (which their filters read)."""
        group = self._by_tag.get(app_tag(channel))
        if group is None:
            return
        known = untagged(channel)
        encoded: str | None = None
        for target in group.values():
            endpoint = target.endpoint
            if not endpoint.wants(name, known):
                continue
            if encoded is None:
                if endpoint.tag:
                    event = {**event, "channel": known}
                encoded = dumps(event)
            if not target.queue.append(encoded):
                log.warning("webhooks for %s: queue full (%d events), %s for %r dropped",
                            endpoint.url, self.settings.max_queue, name, channel)

    def _occupied(self, event: ChannelOccupied) -> None:
        if not self._returned((event.channel, None)):
            self._add("channel_occupied", event.channel,
                      {"name": "channel_occupied", "channel": event.channel})

    def _vacated(self, event: ChannelVacated) -> None:
        self._leave((event.channel, None),
                    {"name": "channel_vacated", "channel": event.channel})

    def _member_added(self, event: MemberAdded) -> None:
        if not self._returned((event.channel, user_key(event.member.user_id))):
            self._add("member_added", event.channel, {
                "name": "member_added", "channel": event.channel,
                "user_id": _user_id(event.member.user_id)})

    def _member_removed(self, event: MemberRemoved) -> None:
        self._leave((event.channel, user_key(event.member.user_id)), {
            "name": "member_removed", "channel": event.channel,
            "user_id": _user_id(event.member.user_id)})

    def _leave(self, key: tuple[str, str | None], body: dict[str, Any]) -> None:
        if self.presence_grace <= 0:
            self._add(body["name"], key[0], body)
            return
        timer = asyncio.get_running_loop().call_later(
            self.presence_grace, self._removed_for_good, key)
        self._leaving[key] = (body, timer)

    def _returned(self, key: tuple[str, str | None]) -> bool:
        """Back within the grace: its leaving is taken back, and its return not told."""
        leaving = self._leaving.pop(key, None)
        if leaving is None:
            return False
        leaving[1].cancel()
        return True

    def _removed_for_good(self, key: tuple[str, str | None]) -> None:
        if key[1] is None:  # a channel goes after its members
            for member in [k for k in self._leaving if k[0] == key[0] and k[1] is not None]:
                self._removed_for_good(member)
        leaving = self._leaving.pop(key, None)
        if leaving is not None:
            leaving[1].cancel()
            self._add(leaving[0]["name"], key[0], leaving[0])

    def _cache_miss(self, event: CacheMiss) -> None:
        self._add("cache_miss", event.channel, {"name": "cache_miss", "channel": event.channel})

    def _client_event(self, event: ClientEvent) -> None:
        body: dict[str, Any] = {"name": "client_event", "channel": event.channel,
                                "event": event.event, "data": event.data_json,
                                "socket_id": event.connection.id}
        member = (event.connection.state.presence or {}).get(event.channel)
        if member is not None:
            body["user_id"] = _user_id(member.user_id)
        self._add("client_event", event.channel, body)
