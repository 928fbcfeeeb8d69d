"""Pusher's HTTP API, what Laravel's `reverb` / `pusher` broadcast driver (pusher-php-server)
and the Python `pusher` package call, on the same port as laravel-echo-server's API.

Every request is signed with a Pusher app's secret (an ``App`` with a ``secret``, from the
app store): the key is public, so the signature is the credential (``pusher_auth``). Errors
answer with Pusher's status codes and a plain-text explanation, as Pusher does; the clients
raise them with that text. Events go out as laravel-echo-server's API's do, so socket.io and
Pusher subscribers alike get them; figures come from ``ServerState``.

A publish is the hot path (Laravel's `pusher` and `reverb` drivers make one request per
broadcast): it is answered within the request's own callback, with no task, the app found in
the store's memory (``cached``; only a key it has never seen waits for its database), the
signature checked on the query as it arrived, the request's events handed to the fan-out as
one batch and the usual ``{}`` answered with bytes encoded once. Only ``info`` (figures that
may live in Redis) makes it wait.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from broadcaster.event import BroadcastEvent
from echo_common.jsoncodec import dumps, is_json, loads_unbounded

from ..apps.model import App
from ..apps.rates import RateTable
from ..apps.store import AppStore, AppsUnavailable
from ..apps.tags import in_app
from ..core.limits import channel_name_problem, event_name_problem
from ..core.state import ServerState
from ..transport.http import Request, Response
from .api import Publish
from .pusher_auth import PusherError, Signatures, Signed, canonical, parsed

# Pusher's documented bounds.
MAX_CHANNELS = 100  # per publish
MAX_BATCH = 10  # events per batch_events
MAX_DATA_BYTES = 10_240  # an event's data
MAX_EVENT_NAME = 200
MAX_USER_ID = 200
KNOWN_CHANNELS = 10_000  # channel names kept as checked; beyond, the set starts again
_COUNTS = ("user_count", "subscription_count")


_EMPTY = Response.prebuilt(200, b"{}", [], "application/json")
# What a route gives: its answer's body now, or later (figures read from the state).
Answer = dict[str, Any] | Coroutine[Any, Any, dict[str, Any]]


class PusherApi:
    """Apps are looked up per request, so a reload's or the database's new apps and secrets
    apply at once."""

    def __init__(self, apps: AppStore, publish: Publish,
                 state: ServerState, *, max_channel_name: int) -> None:
        self.apps = apps
        self.publish = publish
        self.state = state
        self.max_channel_name = max_channel_name
        self.signatures = Signatures()
        self._channels: set[str] = set()  # names that passed ``_channel``
        # Soketi's maxBackendEventsPerSecond and maxReadRequestsPerSecond, per app.
        self.backend_events = RateTable()
        self.api_reads = RateTable()

    def handle(self, request: Request) -> Response | Awaitable[Response] | None:
        """None when the request is not signed (no ``auth_signature``): laravel-echo-server's
        own API answers it. `/users/…` without `/apps/{id}` is where the Python `pusher`
        package (3.3) sends terminate_connections; the key names the app."""
        path = request.path
        if not path.startswith(("/apps/", "/users/")):
            return None
        signed = canonical(request.query_string)
        if signed is None and "auth_signature" not in request.query:
            return None
        try:
            route = _route(request.method, path)
            if signed is None:
                signed = parsed(request.query)
            found = self.apps.cached("key", signed[0])
            if found is None:  # a key the store's memory lacks: its database answers
                return self._looked_up(route, request, signed)
            return self._served(route, request, signed, found[0] if found else None)
        except PusherError as refusal:
            return _refused(refusal)

    async def _looked_up(self, route: _Route, request: Request, signed: Signed) -> Response:
        try:
            app = await self.apps.by_key(signed[0])
        except AppsUnavailable as error:
            return _refused(PusherError(503, f"{error}"))
        answer = self._served(route, request, signed, app)  # a refusal is its answer
        return answer if isinstance(answer, Response) else await answer

    def _served(self, route: _Route, request: Request, signed: Signed,
                app: App | None) -> Response | Awaitable[Response]:
        try:
            method = request.method
            self.signatures.verify(method, request.path, request.body, signed, app)
            assert app is not None
            app_id, handler, name = route
            if app_id is not None and app_id != app.id:
                raise PusherError(401, f"auth_key does not belong to app {app_id}")
            if not app.enabled:  # Pusher's answer to a disabled app
                raise PusherError(403, "Forbidden: the app is disabled")
            if method == "GET" and not self.api_reads.take(app.key, app.rates.api_reads):
                raise PusherError(429, "Too many read requests: over the app's "
                                       "maxReadRequestsPerSecond")
            body = handler(self, request, name, app)
        except PusherError as refusal:
            return _refused(refusal)
        if type(body) is dict:
            return _answer(body)
        return _later(body)  # type: ignore[arg-type]

    # -- routes --------------------------------------------------------------------------
    def trigger(self, request: Request, _: str | None, app: App) -> Answer:
        body = _json_object(request.body)
        raw = body.get("channels") if "channels" in body else [body.get("channel")]
        if not isinstance(raw, list) or not raw:
            raise PusherError(400, "channels must be a non-empty list of channel names")
        most = app.limits.max_event_channels or MAX_CHANNELS
        if len(raw) > most:
            raise PusherError(400, f"{len(raw)} channels: at most {most} per event")
        tag = app.tag  # an isolated app's own channels (apps/tags.py)
        checked = self._channel
        channels = [checked(name) + tag for name in raw]
        limits = app.limits  # the app's own bounds, else Pusher's
        name, data, socket = _fields(body, limits.max_event_name_length or MAX_EVENT_NAME,
                                     limits.max_event_bytes or MAX_DATA_BYTES)
        self._publish([BroadcastEvent(channel, name, data, socket) for channel in channels],
                      app)
        info = _attributes(body.get("info")) if "info" in body else None
        if not info:
            return {}
        return self._trigger_info(channels, info, tag)

    async def _trigger_info(self, channels: list[str], info: set[str],
                            tag: str) -> dict[str, Any]:
        return {"channels": {channel[:len(channel) - len(tag)]: await self._info(channel, info)
                             for channel in channels}}

    def trigger_batch(self, request: Request, _: str | None, app: App) -> Answer:
        batch = _json_object(request.body).get("batch")
        if not isinstance(batch, list) or not batch:
            raise PusherError(400, "batch must be a non-empty list of events")
        most = app.limits.max_batch_size or MAX_BATCH
        if len(batch) > most:
            raise PusherError(400, f"{len(batch)} events: at most {most} per batch")
        if not all(isinstance(item, dict) for item in batch):
            raise PusherError(400, "each batch item must be an object")
        tag = app.tag
        checked = self._channel
        limits = app.limits
        longest = limits.max_event_name_length or MAX_EVENT_NAME
        largest = limits.max_event_bytes or MAX_DATA_BYTES
        events = [BroadcastEvent(checked(item.get("channel")) + tag,
                                 *_fields(item, longest, largest)) for item in batch]
        self._publish(events, app)
        if not any("info" in item for item in batch):
            return {}
        infos = [_attributes(item.get("info")) for item in batch]
        if not any(infos):
            return {}
        return self._batch_info(events, infos)

    async def _batch_info(self, events: list[BroadcastEvent],
                          infos: list[set[str]]) -> dict[str, Any]:
        return {"batch": [await self._info(event.channel, info) if info else {}
                          for event, info in zip(events, infos, strict=True)]}

    async def channels(self, request: Request, _: str | None, app: App) -> dict[str, Any]:
        prefix = request.query.get("filter_by_prefix", "")
        if prefix:
            self._channel(prefix + "x")  # a prefix some channel name can have
        info = _attributes(request.query.get("info"))
        if "user_count" in info and not prefix.startswith("presence-"):
            raise PusherError(400, "user_count may only be requested for presence channels: "
                                   "add filter_by_prefix=presence-")
        counts = in_app(await self.state.channel_counts(prefix), app.tag)
        return {"channels": {name: await self._info(name + app.tag, info, count)
                             for name, count in counts.items() if count > 0}}

    async def channel(self, request: Request, name: str | None, app: App) -> dict[str, Any]:
        channel = self._channel(name)
        info = _attributes(request.query.get("info"))
        if "user_count" in info and not channel.startswith("presence-"):
            raise PusherError(400, "user_count may only be requested for presence channels")
        count = await self.state.channel_count(channel + app.tag)
        return {"occupied": count > 0, **await self._info(channel + app.tag, info, count)}

    async def users(self, request: Request, name: str | None, app: App) -> dict[str, Any]:
        channel = self._channel(name)
        if not channel.startswith("presence-"):
            raise PusherError(400, "Users can only be listed for presence channels")
        members = await self.state.presence_members(channel + app.tag)
        return {"users": [{"id": _user_id_text(m.user_id)} for m in members]}

    async def terminate(self, request: Request, user_id: str | None,
                        app: App) -> dict[str, Any]:
        if not user_id or len(user_id) > MAX_USER_ID:
            raise PusherError(400, f"A user id is 1 to {MAX_USER_ID} characters")
        self.state.terminate_user(user_id, app.tag)  # its own app's users only
        return {}

    # -- helpers -------------------------------------------------------------------------
    def _channel(self, name: Any) -> str:
        """``name``, when Pusher's rules allow it. The names that passed are kept (a bounded
        set, the check being the same for every request): a publisher names the same few
        channels again and again."""
        known = self._channels
        if type(name) is str and name in known:
            return name
        problem = channel_name_problem(name, self.max_channel_name, pusher=True)
        if problem is not None:
            raise PusherError(400, f"Invalid channel: {problem}")
        if len(known) >= KNOWN_CHANNELS:
            known.clear()
        known.add(name)
        return str(name)

    def _publish(self, events: list[BroadcastEvent], app: App) -> None:
        """Everything was checked before the first event goes out: a refused request
        publishes nothing. The request's events go out together, as one batch; each counts
        against the app's maxBackendEventsPerSecond (one per channel, as Soketi counts)."""
        rate = app.rates.backend_events
        if rate and not self.backend_events.take(app.key, rate, len(events)):
            raise PusherError(429, "Too many events: over the app's maxBackendEventsPerSecond")
        if not self.publish(events):
            raise PusherError(503, "Event queue is full: retry later")

    async def _info(self, channel: str, info: set[str],
                    count: int | None = None) -> dict[str, int]:
        figures: dict[str, int] = {}
        if "subscription_count" in info:
            figures["subscription_count"] = (count if count is not None
                                             else await self.state.channel_count(channel))
        if "user_count" in info and channel.startswith("presence-"):
            figures["user_count"] = len(await self.state.presence_members(channel))
        return figures


Handler = Callable[[PusherApi, Request, "str | None", App], Answer]


# (the path's app id, None where the signing key names the app; the handler; the channel or
# user id in the path): a tuple, since one is made per request.
_Route = tuple["str | None", Handler, "str | None"]


_PUBLISHES: dict[str, Handler] = {"events": PusherApi.trigger,
                                  "batch_events": PusherApi.trigger_batch}


def _answer(body: dict[str, Any]) -> Response:
    if not body:
        return _EMPTY
    return Response(200, dumps(body).encode("utf-8"), [], "application/json")


def _refused(refusal: PusherError) -> Response:
    return Response.text(f"{refusal}\n", refusal.status)


async def _later(body: Coroutine[Any, Any, dict[str, Any]]) -> Response:
    try:
        return _answer(await body)
    except PusherError as refusal:
        return _refused(refusal)


def _route(method: str, path: str) -> _Route:
    parts = path.strip("/").split("/")
    if len(parts) == 3 and parts[0] == "apps":  # a publish, the hot path, without the match
        publish = _PUBLISHES.get(parts[2])
        if publish is not None:
            if method != "POST":
                raise PusherError(405, f"{method} not allowed here: use POST")
            return parts[1], publish, None
    if parts[0] == "users":
        app_id, rest = None, parts
    elif parts[0] == "apps" and len(parts) >= 3:
        app_id, rest = parts[1], parts[2:]
    else:
        raise PusherError(404, "Not found")
    found: tuple[str, Handler, str | None] | None = None
    match rest:
        case ["channels"]:
            found = ("GET", PusherApi.channels, None)
        case ["channels", name]:
            found = ("GET", PusherApi.channel, name)
        case ["channels", name, "users"]:
            found = ("GET", PusherApi.users, name)
        case ["users", user_id, "terminate_connections"]:
            found = ("POST", PusherApi.terminate, user_id)
    if found is None or (app_id is None and found[1] is not PusherApi.terminate):
        raise PusherError(404, "Not found")
    if method != found[0]:
        raise PusherError(405, f"{method} not allowed here: use {found[0]}")
    return app_id, found[1], found[2]


def _fields(fields: dict[str, Any], longest: int,
            largest: int) -> tuple[str, str, str | None]:
    """An event's name, data and socket id, checked (``longest`` name, ``largest`` data in
    bytes). Pusher's `data` is a string: JSON text goes to clients as it is (socket.io
    clients get the value, as from Laravel's Redis broadcaster), any other text as a JSON
    string."""
    name, data, socket_id = fields.get("name"), fields.get("data"), fields.get("socket_id")
    if not isinstance(name, str) or not name or len(name) > longest:
        raise PusherError(400, f"name must be an event name of 1 to {longest} characters")
    if event_name_problem(name):
        raise PusherError(400, "name may not hold the control character \\x1f")
    if not isinstance(data, str):
        raise PusherError(400, "data must be a string")
    # A character is at most 4 bytes of UTF-8: only long data is measured.
    size = len(data.encode("utf-8", "surrogatepass")) if len(data) * 4 > largest else 0
    if size > largest:
        raise PusherError(413, f"Payload too large: data of {size} bytes (at most {largest})")
    if socket_id is not None and not isinstance(socket_id, str):
        raise PusherError(400, "socket_id must be a string")
    return name, data if is_json(data) else dumps(data), socket_id or None


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = loads_unbounded(body)  # only strings are taken out of it
    except ValueError:
        raise PusherError(400, "The request body must be JSON") from None
    if not isinstance(value, dict):
        raise PusherError(400, "The request body must be a JSON object")
    return value


def _attributes(info: Any) -> set[str]:
    """The `info` attributes asked for that this server counts (others are ignored)."""
    if not isinstance(info, str):
        return set()
    return {part.strip() for part in info.split(",")} & set(_COUNTS)


def _user_id_text(user_id: Any) -> str:
    """Pusher's user ids are strings; a socket.io member's may be a number (`5` and `"5"`
    are one user, as ``core.presence.user_key`` has it)."""
    if isinstance(user_id, str):
        return user_id
    if isinstance(user_id, float) and user_id.is_integer():
        return str(int(user_id))
    return dumps(user_id)
