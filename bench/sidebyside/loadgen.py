"""The load-generator driver: node worker processes running bench/loadgen.mjs (real
socket.io-client 2.5.0 / 4.x and pusher-js clients) pinned to the load-generator core, spoken
to in JSON lines (``connect``, ``stats``, ``reset``, ``report``, ``churn``, ``exit``), and
their reports merged into one: what was received and lost, and the latency histogram's
percentiles.

Its own module because it is the other side of every measurement: the scenarios and
``bench/pusher_api.py`` say how many clients on which channels, and this turns that into
processes and back into figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .environment import BENCH, BenchError
from .plan import Options
from .servers import PUSHER_APP


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

    async def replies(self, expected: dict[str, int]) -> list[dict[str, Any]]:
        """Every worker's report, unmerged: to merge with another load generator's."""
        return list(await asyncio.gather(*(
            w.request({"cmd": "report", "expected": expected}, "report", 60)
            for w in self.workers)))

    async def report(self, expected: dict[str, int]) -> dict[str, Any]:
        return merge_reports(await self.replies(expected))

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


async def lg_reset(lg: LoadGen) -> None:
    await asyncio.gather(*(w.request({"cmd": "reset"}, "ok") for w in lg.workers))
