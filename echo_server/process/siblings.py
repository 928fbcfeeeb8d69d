"""The workers of one `--workers N` server answer each other's questions, so that `/metrics` and
the status page, asked of any worker (the scraper's address picks one), show the whole server.

Why a line between the workers rather than the cluster's heartbeat snapshots in Redis: the
figures must keep coming while Redis is away (that is when they are looked at), they should be
those of the scrape, not of the last heartbeat, and the other hosts' instances share those
keys. Why not the parent: it is a fork-and-wait loop that owns no event loop and must not die
of a slow scrape.

The parent binds one Unix socket per worker slot, in a directory only the server's user may
enter, and the worker of that slot inherits it, as it inherits its TCP socket: a restarted
worker answers on the same path, and a question put meanwhile waits in the backlog until the
asker's timeout. The exchange is one line naming the question (``metrics``, ``status``), then
the answer until EOF.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("echo_server.siblings")

ASK_TIMEOUT = 2.0  # a worker that has not answered by then is reported down for this answer

Answer = Callable[[], bytes | Awaitable[bytes]]


def worker_suffix(slot: int) -> str:
    """What a worker's instance id adds to its server's (`instanceId`, else a random one)."""
    return f"-w{slot}"


@dataclass(frozen=True)
class WorkerSlot:
    """What the parent hands a worker: its sockets and where to reach the other workers."""
    slot: int
    instance_id: str  # `<instanceId>-w<slot>`, the same across restarts of the slot
    listen: socket.socket  # its socket of the SO_REUSEPORT group on the shared port
    own_port: socket.socket | None  # `workerPorts`: a port only this worker serves
    link: socket.socket  # the Unix socket it answers its siblings on
    link_paths: tuple[str, ...]  # every slot's, in slot order

    @property
    def instance_ids(self) -> tuple[str, ...]:
        """Every slot's instance id, in slot order."""
        base = self.instance_id.removesuffix(worker_suffix(self.slot))
        return tuple(base + worker_suffix(slot) for slot in range(len(self.link_paths)))

    @property
    def directory(self) -> str:
        """The parent's directory for the workers (only the server's user may enter it)."""
        return os.path.dirname(self.link_paths[self.slot])

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.listen, self.own_port, self.link) if s is not None]


class SiblingLink:
    """Answers the other workers' questions and puts this worker's to them."""

    def __init__(self, worker: WorkerSlot, timeout: float = ASK_TIMEOUT) -> None:
        self.worker = worker
        self.timeout = timeout
        self.answers: dict[str, Answer] = {}
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._answer, sock=self.worker.link)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            question = (await asyncio.wait_for(reader.readline(), self.timeout)).strip()
            answer = self.answers.get(question.decode("ascii", "replace"))
            if answer is not None:
                body = answer()
                writer.write(await body if inspect.isawaitable(body) else body)
                await writer.drain()
        except (TimeoutError, OSError) as exc:
            log.debug("a sibling's question went unanswered: %s", exc)
        finally:
            writer.close()

    async def ask(self, question: str) -> dict[int, bytes | None]:
        """Every other worker's answer by slot; None from one that did not answer in time
        (restarting, or stuck), so the caller can say that it is missing."""
        others = [slot for slot in range(len(self.worker.link_paths))
                  if slot != self.worker.slot]
        answers = await asyncio.gather(*(self._ask(slot, question) for slot in others))
        return dict(zip(others, answers, strict=True))

    async def _ask(self, slot: int, question: str) -> bytes | None:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_unix_connection(
                    self.worker.link_paths[slot])
                writer.write(question.encode("ascii") + b"\n")
                answer = await reader.read()  # until EOF
            return answer or None
        except (OSError, TimeoutError):
            return None
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


__all__ = ["ASK_TIMEOUT", "SiblingLink", "WorkerSlot"]
