"""Socket.IO as a registered protocol: laravel-echo-server's clients (Engine.IO 3 and 4) at
``/socket.io/`` and at each isolated app's own endpoint, with the client bundle beside them.

Its parts are in their rooms: which app owns a handshake (``socketio_apps``), Echo's events
(``socketio_echo``), the Socket.IO layer and the Engine.IO server (``transport``), the bundle
(``socketio_bundle``); here they are built from an ``Assembly`` and declared to the server.
The bundle is answered while the server starts (pages load it before they connect), the
engine's requests get 503 until then, as every route not marked ``while_starting``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from channel_auth import ChannelAuthorizer

from ..apps.authorizers import auth_callback, callback_grace, callback_settings
from ..apps.endpoints import BUNDLE
from ..apps.model import App
from ..transport.engine import EngineServer
from ..transport.http import HttpConnection, Request, Response
from ..transport.sockets import SocketServer
from .protocols import Assembly, Route, Served, Settings, Upgrade
from .socketio_apps import SocketIoApps
from .socketio_bundle import ClientBundle
from .socketio_echo import EchoSocketIo


class SocketIoProtocol:
    def __init__(self, assembly: Assembly) -> None:
        settings = assembly.settings
        self._callback_settings = callback_settings(settings)  # as a reload leaves them
        manager = settings.app_manager  # its apps' endpoints are read at start, this long
        self._read_timeout = manager.connect_timeout if manager is not None else 0.0
        # Which app a handshake belongs to: by its host name or its path.
        self.apps = SocketIoApps(
            assembly.apps, settings.socketio_path, self._app_callback, assembly.report_error,
            assembly.core.presence, close_grace=callback_grace(settings))
        self.echo = EchoSocketIo(assembly.core, self.apps, assembly.seats, assembly.on_app)
        self.sockets = SocketServer(self.echo)
        # An isolated app's own allowedOrigins, beside socketio.origins, at each handshake.
        options = replace(settings.engine_options, owner_origin_allowed=self.apps.origin_allowed)
        self.engine = EngineServer(options, self.sockets, assembly.report_error)
        self.sockets.attach(self.engine)
        self.bundle = ClientBundle(assembly.static)

    def _app_callback(self, app: App) -> ChannelAuthorizer:
        return auth_callback(app, **self._callback_settings)

    def wants_bundle(self, path: str) -> bool:
        return path.rpartition("/")[2] in BUNDLE and self.apps.matches(path)

    def bundle_response(self, request: Request, conn: HttpConnection) -> Response:
        return self.bundle.response(request.path.rpartition("/")[2],
                                    request.headers.get("if-none-match"))

    async def start(self) -> None:
        await self.apps.start(self._read_timeout)

    def stop(self) -> None:
        self.engine.stop()
        self.engine.close_all()

    def reconfigure(self, settings: Settings) -> Callable[[], None]:
        """``socketio.origins`` for the requests and upgrades from now on; the callback's
        settings for the isolated apps' /broadcasting/auth: when they change, every app's is
        made again with them (the next private subscribe of an open page asks through it)."""
        allowed = settings.origin_allowed
        settings_now = callback_settings(settings)
        close_grace = callback_grace(settings)

        def apply() -> None:
            self.engine.allow_origins(allowed)
            if settings_now != self._callback_settings:
                self._callback_settings = settings_now
                self.apps.renew_callbacks(close_grace)

        return apply


def served(assembly: Assembly) -> Served:
    socketio = SocketIoProtocol(assembly)
    apps, engine = socketio.apps, socketio.engine
    return Served(
        "socket.io",
        routes=(Route(socketio.wants_bundle, socketio.bundle_response, while_starting=True),
                Route(apps.matches, engine.handle_request)),
        upgrades=(Upgrade(apps.matches, engine.handle_upgrade),),
        start=socketio.start, stop=socketio.stop, close=apps.close,
        reconfigure=socketio.reconfigure, connections=engine.sessions_by_kind,
        parts=(engine, socketio.sockets, socketio.echo, apps, socketio.bundle))
