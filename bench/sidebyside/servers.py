"""The servers under test and how each is started: echo-server (``python -m echo_server
start``) and the reference laravel-echo-server 1.6.3 (installed into bench/.cache/reference
on first use), from the same ``laravel-echo-server.json``, each a fresh process pinned to the
server core; the Pusher app they are given, a webhook receiver that never answers; and what
echo-server says about itself on ``/metrics`` (read between phases, never during one).

Its own module because a server's life (config, start, log, stop) is the same for every
scenario and every runner: ``bench/pusher_api.py`` starts its echo-server through it and
subclasses ``ServerProcess`` for Soketi.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from .environment import CACHE, ROOT, BenchError, free_port, npm_install, wait_port

REFERENCE_PACKAGE = "laravel-echo-server@1.6.3"
REFERENCE_DIR = CACHE / "reference"
KEY_PREFIX = "laravel_database_"
PUSHER_APP = {"appId": "1001", "key": "bench-key", "secret": "bench-secret"}


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


async def start_hanging_receiver() -> asyncio.AbstractServer:
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read nothing, answer nothing, close nothing

    return await asyncio.start_server(hold, "127.0.0.1", 0)


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
