"""Pusher as a registered protocol: the websocket at ``/app/{key}`` (``endpoint``), built from
an ``Assembly`` and declared to the server. Its apps' connections take seats the
process shares with Socket.IO (counted over the workers, and as the other instances last
told)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from ..protocols import Assembly, Served, Settings, Upgrade
from .endpoint import PusherEndpoint, PusherOptions


def _reconfigure(endpoint: PusherEndpoint, settings: Settings) -> Callable[[], None]:
    timeouts = settings.pusher_timeouts
    return functools.partial(endpoint.reconfigure, settings.channel_rules,
                             settings.pusher_socket_ids, settings.origin_allowed,
                             timeouts.activity, timeouts.pong)


def served(assembly: Assembly) -> Served:
    settings = assembly.settings
    timeouts = settings.pusher_timeouts
    endpoint = PusherEndpoint(
        assembly.core, assembly.apps, PusherOptions(
            max_payload=settings.max_http_buffer_size,
            write_high_water=settings.write_buffer_high_water,
            activity_timeout=timeouts.activity, pong_timeout=timeouts.pong,
            signin_timeout=timeouts.signin,
            origin_allowed=settings.origin_allowed),
        assembly.report_error, rules=settings.channel_rules, seats=assembly.seats,
        numeric=settings.pusher_socket_ids, on_app=assembly.on_app)
    return Served("pusher", upgrades=(Upgrade(PusherEndpoint.matches, endpoint.handle_upgrade),),
                  stop=endpoint.stop, reconfigure=functools.partial(_reconfigure, endpoint),
                  connections=endpoint.by_kind, parts=(endpoint,))
