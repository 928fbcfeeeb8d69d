"""`echo-server start --workers N`: N processes serving one port, each client address on one.

Polling needs every request of a client (each poll, the upgrade, a reconnect) to reach the
worker that holds its session. The parent opens N listening sockets on the port in one
SO_REUSEPORT group, one per worker slot, and attaches a classic BPF program to the group that
picks the socket from the client's source address (a multiplicative hash, modulo N). The kernel
does the choosing, so the parent never touches a connection (no accept-and-hand-over hop, no
per-connection cost in a Python process). The parent keeps all N sockets open: a worker that
dies is forked again into its slot, on the same socket, and its clients' new connections wait
in that socket's backlog meanwhile rather than landing on a worker that has not their session.

Behind a proxy every connection comes from the proxy's address, so the hash would put every
client on one worker: `workerPorts` gives each worker a port of its own besides the shared
one (a plain socket the parent also keeps across restarts), for the proxy's upstream to list
with its own address hashing over the real client addresses.

The workers answer each other's questions over Unix sockets the parent binds, in a directory
of its own (`siblings.py`), so `/metrics` and the status page show the whole server.

Each worker is an ordinary `EchoServer`, and an instance of the cluster layer with an id of its
own (`<instanceId>-w<slot>`, kept across restarts, so a restarted worker removes the presence
members of its previous life and they are announced leaving): presence, whispers and the HTTP
API's figures span the workers through Redis, which is why N > 1 needs it. The parent holds the
lock file and forwards SIGTERM (every worker drains) and SIGHUP (every worker reloads).

Linux only: SO_ATTACH_REUSEPORT_CBPF.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

from ..config import Config, ConfigError
from .server import SHUTDOWN_TIMEOUT
from .siblings import WorkerSlot, worker_suffix

log = logging.getLogger("echo_server.workers")

SO_ATTACH_REUSEPORT_CBPF = 51  # linux/asm-generic/socket.h
PR_SET_PDEATHSIG = 1  # linux/prctl.h
LISTEN_BACKLOG = 4096
RESTART_BACKOFF = (0.1, 5.0)  # a worker that keeps dying at start is restarted ever later
STOP_MARGIN = 5.0  # seconds beyond drainDelay + the drain timeout before SIGKILL

# Classic BPF: the client's IPv4 source address (or the last 32 bits of its IPv6 one),
# times Knuth's multiplicative constant, bits 16-31, modulo the number of workers.
_SKF_NET_OFF = -0x100000 & 0xFFFFFFFF
_LDB, _LDW, _RSH, _JEQ, _JA, _MUL, _MOD, _RET_A = 0x30, 0x20, 0x74, 0x15, 0x05, 0x24, 0x94, 0x16


def address_hash_program(workers: int) -> bytes:
    instructions = [
        (_LDB, 0, 0, _SKF_NET_OFF),  # IP version
        (_RSH, 0, 0, 4),
        (_JEQ, 0, 2, 4),
        (_LDW, 0, 0, _SKF_NET_OFF + 12),  # IPv4 source
        (_JA, 0, 0, 1),
        (_LDW, 0, 0, _SKF_NET_OFF + 20),  # IPv6 source, last 32 bits
        (_MUL, 0, 0, 0x9E3779B1),
        (_RSH, 0, 0, 16),
        (_MOD, 0, 0, workers),
        (_RET_A, 0, 0, 0),
    ]
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in instructions)


def listening_sockets(config: Config, workers: int) -> list[socket.socket]:
    """One socket per slot, in slot order (the group's index is the order of `listen`)."""
    host = config.host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    port = config.port
    for _ in range(workers):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        port = sock.getsockname()[1]  # port 0: every slot on the port the first one got
        sock.listen(LISTEN_BACKLOG)
        sock.set_inheritable(True)
        sockets.append(sock)
    program = ctypes.create_string_buffer(address_hash_program(workers))
    fprog = struct.pack("@HP", len(program.raw) // 8, ctypes.addressof(program))
    sockets[0].setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    return sockets


def own_ports(config: Config, ports: list[int]) -> list[socket.socket]:
    """`workerPorts`: one plain listening socket per worker, on the configured host."""
    host = config.host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets = []
    for port in ports:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets


def link_sockets(directory: str, workers: int) -> list[socket.socket]:
    """One Unix socket per slot, in a directory only this user may enter (mkdtemp: 0700)."""
    sockets = []
    for slot in range(workers):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(os.path.join(directory, f"w{slot}.sock"))
        sock.listen(64)
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets


def check_cluster(config: Config, workers: int) -> None:
    """N > 1 only as instances of one cluster: presence and whispers must cross workers."""
    if not config.clustered:
        raise ConfigError(
            f"workers: {workers} needs the cluster layer over Redis (`database: \"redis\"`, "
            "cluster not disabled): the workers share presence and relay whispers through "
            "it. Configure Redis, or run one worker")
    from broadcaster.sources.base import display_url

    from .redis_client import make_client

    async def ping() -> None:
        client = make_client(config.redis_url, max_connections=1, retries=0)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except Exception as exc:
        raise ConfigError(
            f"workers: {workers} needs Redis, and Redis at {display_url(config.redis_url)} "
            f"does not answer ({exc}): start Redis (databaseConfig.redis), or run one "
            "worker") from None


Serve = Callable[[Config, WorkerSlot], int]


class Supervisor:
    """Forks the workers, restarts one that dies into its slot, forwards signals."""

    def __init__(self, config: Config, workers: list[WorkerSlot], serve: Serve) -> None:
        self.config = config
        self.workers = workers
        self.serve = serve
        self.slots: dict[int, int] = {}  # pid -> slot
        self.started: dict[int, float] = {}  # slot -> when its worker was last forked
        self.backoff: dict[int, float] = {}
        self.stopping = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._forward)
        signal.signal(signal.SIGALRM, self._kill)
        for slot in range(len(self.workers)):
            self._spawn(slot)
        log.info("%d workers serving port %d (client address -> worker)", len(self.workers),
                 self.workers[0].listen.getsockname()[1])
        failed = False
        while self.slots:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid not in self.slots:
                continue
            slot = self.slots.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                if code != 0:
                    failed = True
                    log.warning("worker %d (process %d) exited with %d while stopping", slot,
                                pid, code, extra={"worker": slot})
                continue
            self._restart(slot, pid, code)
        signal.setitimer(signal.ITIMER_REAL, 0)
        return 1 if failed else 0

    def _restart(self, slot: int, pid: int, code: int) -> None:
        quick = time.monotonic() - self.started[slot] < RESTART_BACKOFF[1]
        delay = min(RESTART_BACKOFF[1], self.backoff.get(slot, 0) * 2 or RESTART_BACKOFF[0])
        self.backoff[slot] = delay if quick else 0.0
        log.warning("worker %d (process %d) exited with %d; starting it again in its slot%s",
                    slot, pid, code, f" in {delay:.1f} s" if quick else "",
                    extra={"worker": slot})
        if quick:
            time.sleep(delay)
        if not self.stopping:
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        self.started[slot] = time.monotonic()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            _die_with(parent)
            self._worker(slot)
        self.slots[pid] = slot
        log.info("worker %d started (process %d)", slot, pid, extra={"worker": slot})

    def _worker(self, slot: int) -> NoReturn:
        code = 1
        try:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):
                signal.signal(signum, signal.SIG_DFL)
            for other in self.workers:
                if other.slot != slot:
                    for sock in other.sockets():
                        sock.close()
            for handler in logging.getLogger().handlers:
                handler.addFilter(_WorkerContext(slot))
            code = self.serve(self.config, self.workers[slot])
        except BaseException:
            log.exception("worker %d failed", slot, extra={"worker": slot})
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            self.stopping = True
            grace = self.config.drain_delay + SHUTDOWN_TIMEOUT + STOP_MARGIN
            log.info("stopping %d workers", len(self.slots))
            signal.setitimer(signal.ITIMER_REAL, grace)
        self._send(signal.SIGTERM)

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        self._send(signum)

    def _kill(self, _signum: int, _frame: FrameType | None) -> None:
        log.warning("workers still running after the drain timeout: killing them")
        self._send(signal.SIGKILL)

    def _send(self, signum: int) -> None:
        for pid in list(self.slots):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


def _die_with(parent: int) -> None:
    """A worker whose parent was killed (SIGKILL: no SIGTERM forwarded) drains and stops
    rather than serving on as an orphan under its slot's instance id, beside the workers of
    the next start."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


class _WorkerContext(logging.Filter):
    """Every record of a worker names it (a field of the JSON format)."""

    def __init__(self, slot: int) -> None:
        super().__init__()
        self.slot = slot

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.slot
        return True


def run_workers(config: Config, workers: int, serve: Serve,
                worker_ports: list[int] | None = None) -> int:
    """The parent of ``workers`` processes; returns when all of them have stopped."""
    if not hasattr(socket, "SO_REUSEPORT") or not sys.platform.startswith("linux"):
        raise ConfigError("workers > 1 needs Linux (SO_REUSEPORT with a BPF program); run "
                          "one worker per port here instead")
    check_cluster(config, workers)
    host = config.host or "0.0.0.0"
    try:
        shared = listening_sockets(config, workers)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{config.port} with {workers} workers: "
                          f"{exc}") from None
    try:
        own: list[socket.socket | None] = (list(own_ports(config, worker_ports)) if worker_ports
                                           else [None] * workers)
    except OSError as exc:
        raise ConfigError(f"workerPorts: cannot listen on {host}:{worker_ports}: {exc}") from None
    directory = tempfile.mkdtemp(prefix="echo-server-workers-")
    try:
        links = link_sockets(directory, workers)
        base_id = config.instance_id or secrets.token_hex(6)
        paths = tuple(str(sock.getsockname()) for sock in links)
        slots = [WorkerSlot(slot, base_id + worker_suffix(slot), shared[slot], own[slot],
                            links[slot], paths) for slot in range(workers)]
        return Supervisor(config, slots, serve).run()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
