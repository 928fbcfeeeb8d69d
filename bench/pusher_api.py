#!/usr/bin/env python3
"""Publishing through Pusher's HTTP API: echo-server next to Soketi 1.6.1, same run, same
clients (issue 23).

    .venv/bin/python bench/pusher_api.py [--only fanout,one,batch,fresh,redis,connect]
                                         [--servers echo-server,soketi] [--seconds 5]

Clients are bare Pusher-protocol websockets (bench/loadgen.mjs ``--version pusher-raw``),
pinned to the load-generator core; each server is pinned to the other. Events are signed as
pusher-php-server (Laravel's `pusher` and `reverb` broadcast drivers) signs them: ``body_md5``,
``auth_key``, ``auth_timestamp``, ``auth_version`` sorted, HMAC-SHA256 of
``POST\\n<path>\\n<query>`` with the app secret, and the body ``{"name","data","channels"}``
with ``data`` the event's JSON as a string (``batch_events``: ``{"batch":[{channel,name,data}]}``).
The publisher (this process, floating) keeps its connections alive, as Guzzle does within one
PHP process; ``fresh`` opens one connection per event, as a PHP-FPM worker's request does.

Rows (µs of server CPU, utime+stime of every thread, over the measured phase):
  fanout   1,000 clients on one channel, 25 events/s, one POST each: per delivered message
  one      2,000 channels with one client each, 2,000 events/s, one POST each: per event
  batch    the same with batch_events of 10: per event
  fresh    the same as `one`, a new connection per POST: per event
  redis    the same as `one` published through Redis (echo-server only): per event
  connect  2,000 clients connecting and subscribing at once: per connection, then idle
           RSS per connection

Soketi 1.6.1 is installed into bench/.cache/soketi/ on first use (gitignored); its
uWebSockets.js dependency points at GitHub and has no Node 20 build, so the npm package
``@trufflesuite/uws-js-unofficial@20.30.0-unofficial.0`` (uWS.js 20.30 with a Node 20 binary)
is aliased in through ``overrides``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import redis  # noqa: E402
from publisher import (  # noqa: E402
    EVENT,
    MESSAGE_BYTES,
    READY_EVENT,
    MessageTemplate,
    laravel_json,
    lead_assigned_data,
    publish,
)
from sidebyside.environment import (  # noqa: E402
    CACHE,
    BenchError,
    RedisServer,
    cpu_count,
    ensure_loadgen_modules,
    free_port,
    npm_install,
    package_version,
    raise_nofile,
    wait_port,
)
from sidebyside.loadgen import LoadGen, LoadGenSpec, lg_reset, wait_delivery  # noqa: E402
from sidebyside.measure import Delta, delta, snapshot  # noqa: E402
from sidebyside.plan import FULL as SCALE  # noqa: E402
from sidebyside.plan import Options  # noqa: E402
from sidebyside.servers import KEY_PREFIX, PUSHER_APP, ServerProcess  # noqa: E402

SOKETI_VERSION = "1.6.1"
SOKETI_DIR = CACHE / "soketi"
SOKETI_PACKAGE = {
    "private": True,
    "dependencies": {"@soketi/soketi": SOKETI_VERSION},
    "overrides": {"uWebSockets.js": "npm:@trufflesuite/uws-js-unofficial@20.30.0-unofficial.0"},
}
SERVERS = ("echo-server", "soketi")
SCENARIOS = ("fanout", "one", "batch", "fresh", "redis", "connect")
FANOUT_CLIENTS, FANOUT_RATE = 1000, 25.0
CHANNELS, ONE_RATE = 2000, 2000.0
BATCH = 10
CONNECT_CLIENTS = 2000
CONNECTIONS = 4  # the publisher's keep-alive connections (PHP processes)
PHP_LIBRARY = "pusher-http-php 7.2.4"


# -- Soketi --------------------------------------------------------------------------------------
def ensure_soketi() -> Path:
    entry = SOKETI_DIR / "node_modules" / "@soketi" / "soketi" / "bin" / "server.js"
    if not entry.exists() or package_version(SOKETI_DIR, "@soketi/soketi") != SOKETI_VERSION:
        print(f"installing @soketi/soketi@{SOKETI_VERSION} into {SOKETI_DIR}...", flush=True)
        SOKETI_DIR.mkdir(parents=True, exist_ok=True)
        (SOKETI_DIR / "package.json").write_text(json.dumps(SOKETI_PACKAGE, indent=2) + "\n")
        npm_install(SOKETI_DIR, ["install"])
    return entry


class SoketiProcess(ServerProcess):
    """``soketi start`` with one app (the bench's Pusher app) from its environment variables;
    stopped, read and addressed as run.py's servers are."""

    def __init__(self, entry: Path, cpu: int | None, workdir: Path) -> None:
        self.kind = "soketi"
        self.port = free_port()
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SOKETI_PORT": str(self.port),
               "SOKETI_DEFAULT_APP_ID": PUSHER_APP["appId"],
               "SOKETI_DEFAULT_APP_KEY": PUSHER_APP["key"],
               "SOKETI_DEFAULT_APP_SECRET": PUSHER_APP["secret"],
               "SOKETI_METRICS_SERVER_PORT": str(free_port()),
               "SOKETI_DEBUG": "0"}
        command = [shutil.which("node") or "node", str(entry), "start"]
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        self.log_path = workdir / "server.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(command, cwd=SOKETI_DIR, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        try:
            wait_port(self.port, self.proc, 30, "soketi")
        except BenchError:
            self.stop()
            raise BenchError(f"soketi did not start:\n{self.log_tail()}") from None


# -- the publisher: pusher-php-server's requests ---------------------------------------------------
class Events:
    """The benchmark's event as pusher-php-server posts it: Laravel's payload (the Redis
    rows' ``lead.assigned``, without the ``socket`` Laravel's PusherBroadcaster pulls out)
    JSON-encoded as ``data``, stamped with ``sent_ns`` at send time."""

    def __init__(self) -> None:
        sentinel = int("9" * len(str(time.monotonic_ns())))
        data = lead_assigned_data(MessageTemplate._fit(EVENT, sentinel, MESSAGE_BYTES))
        data["sent_ns"] = sentinel
        quoted = laravel_json(laravel_json(data))  # json_encode of the json_encode'd payload
        self.head, self.tail = quoted.split(str(sentinel))

    def data(self, stamp: int) -> str:
        return f"{self.head}{stamp}{self.tail}"

    def trigger(self, channel: str, stamp: int, event: str = EVENT) -> bytes:
        return (f'{{"name":{laravel_json(event)},"data":{self.data(stamp)},'
                f'"channels":[{laravel_json(channel)}]}}').encode()

    def batch(self, channels: list[str], stamp: int, event: str = EVENT) -> bytes:
        data = self.data(stamp)
        items = ",".join(f'{{"channel":{laravel_json(c)},"name":{laravel_json(event)},'
                         f'"data":{data}}}' for c in channels)
        return f'{{"batch":[{items}]}}'.encode()


def signed_request(port: int, path: str, body: bytes, keep_alive: bool = True) -> bytes:
    """pusher-php-server's ``build_auth_query_params``: ksort'ed params, HMAC-SHA256 hex."""
    params = {"auth_key": PUSHER_APP["key"], "auth_timestamp": str(int(time.time())),
              "auth_version": "1.0", "body_md5": hashlib.md5(body).hexdigest()}
    query = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    signature = hmac.new(PUSHER_APP["secret"].encode(), f"POST\n{path}\n{query}".encode(),
                         hashlib.sha256).hexdigest()
    return (f"POST {path}?{query}&auth_signature={signature} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUser-Agent: GuzzleHttp/7\r\n"
            f"Content-Type: application/json\r\nX-Pusher-Library: {PHP_LIBRARY}\r\n"
            + ("" if keep_alive else "Connection: close\r\n")
            + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the server keeps the connection): Soketi answers every API request
    with ``Connection: close``, and the publisher then opens a new one, as Guzzle does."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length, keep = 0, True
    for line in head.split(b"\r\n"):
        lower = line.lower()
        if lower.startswith(b"content-length:"):
            length = int(line[15:])
        elif lower.startswith(b"connection:") and b"close" in lower:
            keep = False
    if length:
        await reader.readexactly(length)
    return status, keep


@dataclass
class Published:
    requests: int = 0
    events: int = 0
    failed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    per_channel: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    max_lag_ms: float = 0.0


async def post_all(port: int, requests: list[tuple[str, list[str]]],
                   body: Callable[[list[str], int], bytes], rate: float, *,
                   fresh: bool = False, connections: int = CONNECTIONS) -> Published:
    """``requests`` (path, channels) at ``rate`` requests/s on an absolute schedule (0: as
    fast as the connections go), each on one of ``connections`` keep-alive connections (a
    new one when the server closes one), or on a connection of its own when ``fresh``."""
    done = Published()
    started = time.monotonic()
    interval = 1.0 / rate if rate > 0 else 0.0
    nxt = 0

    async def one(reader: asyncio.StreamReader | None, writer: asyncio.StreamWriter | None,
                  path: str, channels: list[str]) -> tuple[Any, Any]:
        if fresh:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert reader is not None and writer is not None
        writer.write(signed_request(port, path, body(channels, time.monotonic_ns()),
                                    keep_alive=not fresh))
        status, keep = await read_response(reader)
        done.requests += 1
        done.statuses[str(status)] = done.statuses.get(str(status), 0) + 1
        if status == 200:
            done.events += len(channels)
            for channel in channels:
                done.per_channel[channel] = done.per_channel.get(channel, 0) + 1
        else:
            done.failed += 1
        if fresh or not keep:
            writer.close()
            if not fresh:
                return await asyncio.open_connection("127.0.0.1", port)
            return None, None
        return reader, writer

    async def lane() -> None:
        nonlocal nxt
        reader = writer = None
        if not fresh:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while nxt < len(requests):
            index, nxt = nxt, nxt + 1
            delay = started + index * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                done.max_lag_ms = max(done.max_lag_ms, -delay * 1000)
            reader, writer = await one(reader, writer, *requests[index])
        if writer is not None:
            writer.close()

    await asyncio.gather(*(lane() for _ in range(connections)))
    done.seconds = time.monotonic() - started
    return done


# -- scenarios -----------------------------------------------------------------------------------
@dataclass
class Ctx:
    server: ServerProcess
    opts: Options
    logdir: Path
    redis: redis.Redis
    seconds: float
    mark: Path | None = None
    events: Events = field(default_factory=Events)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def app_path(self) -> str:
        return f"/apps/{PUSHER_APP['appId']}"

    def snap(self, lg: LoadGen) -> Any:
        return snapshot(self.server.pid, lg.pids, self.opts.server_cpu)

    async def loadgen(self, clients: int, template: str | None) -> LoadGen:
        spec = LoadGenSpec(clients, "pusher-raw", channel=None if template else "bench",
                           channel_template=template)
        return await LoadGen.start(self.server.url, spec, self.opts, self.logdir)

    async def post(self, channels: list[str], rate: float, *, batch: int = 1,
                   fresh: bool = False, event: str = EVENT) -> Published:
        if batch == 1:
            requests = [(f"{self.app_path}/events", [c]) for c in channels]
            body = lambda cs, stamp: self.events.trigger(cs[0], stamp, event)  # noqa: E731
        else:
            requests = [(f"{self.app_path}/batch_events", channels[i:i + batch])
                        for i in range(0, len(channels), batch)]
            body = lambda cs, stamp: self.events.batch(cs, stamp, event)  # noqa: E731
        return await post_all(self.server.port, requests, body, rate / batch, fresh=fresh)


async def connected(ctx: Ctx, lg: LoadGen, rate: float) -> dict[str, Any]:
    result = await lg.connect(rate)
    if result["failed"]:
        raise BenchError(f"{result['failed']} of {lg.spec.clients} clients failed to connect: "
                         f"{result['errors']}")
    return result


async def ready(ctx: Ctx, lg: LoadGen, channels: list[str], timeout: float = 60) -> None:
    """``bench.ready`` through the API (batches of 10) until every client has one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await ctx.post(channels, 0, batch=BATCH, event=READY_EVENT)
        await asyncio.sleep(0.3)
        if (await lg.stats())["ready"] >= lg.spec.clients:
            return
    raise BenchError("not every client got the ready event")


async def settled(ctx: Ctx, lg: LoadGen, timeout: float = 15.0) -> None:
    """Until the server is idle (under 3 % of a core over 200 ms): what the subscriptions
    left to do (echo-server counts channel occupancy in Redis, one round trip each) is not
    charged to the events."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = ctx.snap(lg)
        await asyncio.sleep(0.2)
        d = delta(before, ctx.snap(lg))
        if d.cpu < 0.03 * d.wall:
            return


async def measure(ctx: Ctx, lg: LoadGen, clients_per_channel: int,
                  send: Callable[[], Awaitable[Published]]) -> None:
    await settled(ctx, lg)
    await lg_reset(lg)
    if ctx.mark is not None:  # for a profiler to attach now: the server's pid
        ctx.mark.write_text(f"{ctx.server.pid}\n")
    before = ctx.snap(lg)
    published = await send()
    await wait_delivery(lg, published.events * clients_per_channel)
    d: Delta = delta(before, ctx.snap(lg))
    if ctx.mark is not None:
        ctx.mark.unlink(missing_ok=True)
    report = await lg.report(published.per_channel)
    delivered = report["received"]
    ctx.figures.update({
        "requests": published.requests, "events": published.events,
        "failed_requests": published.failed, "statuses": published.statuses,
        "delivered": delivered, "lost": report["lost"] + published.failed * clients_per_channel,
        "extra": report["extra"], "disconnects": report["disconnects"],
        "cpu_s": d.cpu, "cpu_utime_stime_s": d.cpu_ticks, "wall_s": d.wall,
        "publish_rate": published.events / published.seconds if published.seconds else None,
        "publish_max_lag_ms": published.max_lag_ms,
        "cpu_us_per_event": d.cpu / published.events * 1e6 if published.events else None,
        "cpu_us_per_msg": d.cpu / delivered * 1e6 if delivered else None,
        "softirq_us_per_msg": d.softirq / delivered * 1e6
        if d.softirq is not None and delivered else None,
        "writes_per_msg": d.writes / delivered if d.writes is not None and delivered else None,
        "cpu_pct": d.cpu / d.wall * 100 if d.wall else None,
        "loadgen_cpu_pct": d.loadgen_cpu / d.wall * 100 if d.wall else None,
        "latency_ms": {k: report["latency_ms"][k] for k in ("p50", "p99", "max")},
    })


async def scenario_fanout(ctx: Ctx) -> None:
    lg = await ctx.loadgen(FANOUT_CLIENTS, None)
    try:
        await connected(ctx, lg, 1000)
        await ready(ctx, lg, ["bench"])
        count = int(FANOUT_RATE * ctx.seconds * 2)
        await measure(ctx, lg, FANOUT_CLIENTS,
                      lambda: ctx.post(["bench"] * count, FANOUT_RATE))
    finally:
        await lg.close()


def scenario_one(batch: int = 1, fresh: bool = False,
                 through_redis: bool = False) -> Callable[[Ctx], Awaitable[None]]:
    async def run(ctx: Ctx) -> None:
        template = "bench.{i}"
        names = [template.replace("{i}", str(i)) for i in range(CHANNELS)]
        lg = await ctx.loadgen(CHANNELS, template)
        count = int(ONE_RATE * ctx.seconds)
        order = [names[i % CHANNELS] for i in range(count)]
        try:
            await connected(ctx, lg, 2000)
            await ready(ctx, lg, names)
            if through_redis:
                async def send() -> Published:
                    result = await asyncio.to_thread(publish, ctx.redis, KEY_PREFIX, names,
                                                     count, ONE_RATE)
                    return Published(requests=count, events=count,
                                     per_channel=result["per_channel"],
                                     seconds=result["seconds"],
                                     max_lag_ms=result["max_lag_ms"])
                await measure(ctx, lg, 1, send)
            else:
                await measure(ctx, lg, 1, lambda: ctx.post(order, ONE_RATE, batch=batch,
                                                            fresh=fresh))
        finally:
            await lg.close()
    return run


async def scenario_connect(ctx: Ctx) -> None:
    await asyncio.sleep(1.0)  # start-up allocation settles before the baseline
    lg = await ctx.loadgen(CONNECT_CLIENTS, None)
    try:
        before = ctx.snap(lg)
        result = await lg.connect(0)
        await asyncio.sleep(0.5)
        after = ctx.snap(lg)
        d = delta(before, after)
        if result["failed"]:
            raise BenchError(f"{result['failed']} clients failed: {result['errors']}")
        await ready(ctx, lg, ["bench"])
        await asyncio.sleep(2.0)
        idle = ctx.snap(lg)
        ctx.figures.update({
            "clients": CONNECT_CLIENTS, "connect_s": result["ms"] / 1000, "cpu_s": d.cpu,
            "cpu_us_per_conn": d.cpu / CONNECT_CLIENTS * 1e6,
            "kb_per_conn": (idle.rss_kb - before.rss_kb) / CONNECT_CLIENTS,
            "overflows": d.overflows, "lost": 0,
        })
    finally:
        await lg.close()


RUNNERS: dict[str, Callable[[Ctx], Awaitable[None]]] = {
    "fanout": scenario_fanout,
    "one": scenario_one(),
    "batch": scenario_one(batch=BATCH),
    "fresh": scenario_one(fresh=True),
    "redis": scenario_one(through_redis=True),
    "connect": scenario_connect,
}
ROWS = (  # scenario, figure key, label
    ("fanout", "cpu_us_per_msg", "fan-out: 1,000 clients, 25 ev/s, µs / delivered msg"),
    ("one", "cpu_us_per_event", "one recipient, 2,000 ev/s, one POST each: µs / event"),
    ("batch", "cpu_us_per_event", f"the same, batch_events of {BATCH}: µs / event"),
    ("fresh", "cpu_us_per_event", "the same, a new connection per POST: µs / event"),
    ("redis", "cpu_us_per_event", "the same event through Redis: µs / event"),
    ("connect", "kb_per_conn", "idle connection, KB"),
    ("connect", "cpu_us_per_conn", "connect + subscribe, µs"),
)


# -- running -------------------------------------------------------------------------------------
async def run_one(kind: str, name: str, opts: Options, redis_server: RedisServer,
                  soketi: Path | None, workdir: Path, seconds: float,
                  extra: dict[str, Any], mark: Path | None = None,
                  peer: bool = False) -> dict[str, Any]:
    logdir = workdir / f"{name}-{kind}"
    logdir.mkdir(parents=True, exist_ok=True)
    # A fresh Redis per scenario, as each server is fresh: an earlier scenario's instance that
    # did not leave the cluster's instances set within its stop would count as a listener
    # (and be relayed to) until reaped.
    with redis.Redis(port=redis_server.port) as fresh:
        fresh.flushall()
    others: list[ServerProcess] = []
    if peer and kind == "echo-server":  # an idle instance on the same Redis, not pinned
        others.append(ServerProcess(kind, redis_server.port, None, None, logdir / "peer",
                                    {"clients": [dict(PUSHER_APP)], **extra}))
    if kind == "soketi":
        assert soketi is not None
        server: ServerProcess = SoketiProcess(soketi, opts.server_cpu, logdir)
    else:
        server = ServerProcess(kind, redis_server.port, opts.server_cpu, None, logdir,
                               {"clients": [dict(PUSHER_APP)], **extra})
    client = redis.Redis(port=redis_server.port)
    ctx = Ctx(server, opts, logdir, client, seconds, mark)
    try:
        await RUNNERS[name](ctx)
    except (BenchError, OSError, asyncio.IncompleteReadError) as exc:
        ctx.figures["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        server.stop()
        for other in others:
            other.stop()
        client.close()
    return ctx.figures


def fmt(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def render(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = ["| row | echo-server | Soketi 1.6.1 | ratio | lost (ours / Soketi) |",
             "|---|---|---|---|---|"]
    for name, key, label in ROWS:
        if name not in results:
            continue
        ours = results[name].get("echo-server", {})
        theirs = results[name].get("soketi", {})
        a, b = ours.get(key), theirs.get(key)
        ratio = f"{a / b:.2f}×" if a and b else "–"
        lost = f"{ours.get('lost', '–')} / {theirs.get('lost', '–') if theirs else '–'}"
        lines.append(f"| {label} | {fmt(a)} | {fmt(b)} | {ratio} | {lost} |")
    one = results.get("one", {}).get("echo-server", {}).get("cpu_us_per_event")
    via_redis = results.get("redis", {}).get("echo-server", {}).get("cpu_us_per_event")
    if one and via_redis:
        lines.append(f"| one recipient: API / Redis (echo-server) | {one / via_redis:.2f}× "
                     "| | | |")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if any(n not in SCENARIOS for n in names) or any(s not in SERVERS for s in servers):
        print(f"scenarios: {', '.join(SCENARIOS)}; servers: {', '.join(SERVERS)}",
              file=sys.stderr)
        return 2
    two = cpu_count() >= 2 and not args.no_pin
    raise_nofile(CONNECT_CLIENTS + 3000)
    opts = Options(False, SCALE, 0 if two else None, 1 if two else None, None,
                   resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    ensure_loadgen_modules()
    soketi = ensure_soketi() if "soketi" in servers else None
    # --single: one instance that shares nothing (no cluster relay through Redis), as Soketi
    # runs here; by default echo-server runs as laravel-echo-server.json with `database:
    # redis` has it: ready for other instances on the same Redis.
    extra: dict[str, Any] = {"cluster": {"enabled": False}} if args.single else {}
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="echo-pusher-bench-") as tmp:
        redis_server = RedisServer(tmp)
        try:
            for name in names:
                for kind in servers:
                    if name == "redis" and kind != "echo-server":
                        continue  # Soketi does not read Laravel's Redis broadcasts
                    figures = await run_one(kind, name, opts, redis_server, soketi,
                                            Path(tmp), args.seconds, extra,
                                            Path(args.mark) if args.mark else None,
                                            args.peer)
                    results.setdefault(name, {})[kind] = figures
                    shown = {k: figures.get(k) for k in (
                        "cpu_us_per_event", "cpu_us_per_msg", "cpu_us_per_conn", "kb_per_conn",
                        "lost", "failed_requests", "publish_rate", "cpu_pct",
                        "loadgen_cpu_pct", "error") if figures.get(k) is not None}
                    print(f"{name} {kind}: {json.dumps(shown)}", flush=True)
        finally:
            redis_server.stop()
    table = render(results)
    print()
    print(table)
    out = Path(args.json) if args.json else CACHE / "pusher-api-results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                               "results": results, "table": table}, indent=2))
    return 1 if any("error" in f for per in results.values() for f in per.values()) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="length of each publishing phase (fan-out: twice this)")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--mark", help="a file holding the server's pid while a measured "
                                       "phase runs (for perf or py-spy to attach)")
    parser.add_argument("--peer", action="store_true",
                        help="a second echo-server instance on the same Redis, idle: what "
                             "the relay of API publishes to it costs")
    parser.add_argument("--single", action="store_true",
                        help="echo-server without the cluster relay (one instance)")
    parser.add_argument("--json", help="every figure (default bench/.cache/"
                                       "pusher-api-results.json)")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop
        uvloop.install()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
