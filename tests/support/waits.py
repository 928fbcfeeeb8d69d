"""Waiting for server-side state that the protocol never acknowledges.

Echo's ``subscribe``/``unsubscribe`` have no answer, so a test that must know
a (un)subscribe landed before it publishes polls the server's rooms. These are
condition waits with a deadline, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from echo_server.process.ingest import SourceRunner
from echo_server.process.server import EchoServer
from echo_server.transport.sockets import Socket
from tests.support.node_client import NodeEchoClient

ClientFactory = Callable[..., Awaitable[NodeEchoClient]]


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting until {what}")
        await asyncio.sleep(0.005)


def member_ids(server: EchoServer, channel: str) -> set[str]:
    return {m.id for m in server.core.rooms.members(channel) or ()}


async def wait_member(server: EchoServer, channel: str, socket_id: str,
                      timeout: float = 5.0) -> None:
    """Until ``socket_id`` sits in ``channel`` (its subscribe was handled)."""
    await wait_until(lambda: socket_id in member_ids(server, channel),
                     f"{socket_id} joined {channel}", timeout)


async def wait_not_member(server: EchoServer, channel: str, socket_id: str,
                          timeout: float = 5.0) -> None:
    await wait_until(lambda: socket_id not in member_ids(server, channel),
                     f"{socket_id} left {channel}", timeout)


async def wait_gone(server: EchoServer, socket_id: str, timeout: float = 5.0) -> None:
    """Until the server has processed the disconnect of ``socket_id``."""
    await wait_until(lambda: socket_id not in server.core.connections,
                     f"{socket_id} disconnected", timeout)


def server_socket(server: EchoServer, socket_id: str) -> Socket:
    return server.core.connections[socket_id]


def redis_runner(server: EchoServer) -> SourceRunner:
    return next(r for r in server.runners if r.source.kind == "redis")


def rooms_holding(server: EchoServer, socket: Socket) -> list[str]:
    """Every room whose member set still holds ``socket`` (should be none once it is gone)."""
    return [room for room in server.core.rooms if server.core.rooms.contains(room, socket)]


async def dropped(server: EchoServer, ws: Any) -> None:
    """Abort a raw websocket's TCP connection (no close frame: a network drop), and return
    once ``server`` has parked its recoverable session."""
    ws.writer.transport.abort()
    sessions = server.core.sessions
    assert sessions is not None
    await wait_until(lambda: len(sessions.parked) == 1, "the drop noticed")
