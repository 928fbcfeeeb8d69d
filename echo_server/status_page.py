"""Placeholder replaced by the status page implementation (issue 6)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .transport.http import Request, Response

if TYPE_CHECKING:
    from .server import EchoServer


class StatusPage:
    PATHS = frozenset({"/status", "/status.json"})

    def __init__(self, server: EchoServer, sample_interval: float = 1.0) -> None:
        self.server = server
        self.sample_interval = sample_interval

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def handle(self, request: Request) -> Response:
        return self.server.api.not_found(request)
