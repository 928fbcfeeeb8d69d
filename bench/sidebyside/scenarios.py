"""The scenarios, one function each (fan-out on one and two instances and on ``--workers``,
one recipient per event, fixed rates, idle connections, connect storms, polling, the soak),
the table that names them, and ``run_one``: one scenario against a fresh server for one
column of the table.

Its own module because this is what a reader of the table looks up to know what a row
measured; bench/README.md ("Scenarios and figures") says it in prose.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from http import client as http_client
from pathlib import Path
from typing import Any

import redis
from publisher import channel_names, publish

from .environment import BenchError, RedisServer
from .loadgen import LoadGen, LoadGenSpec, lg_reset, merge_reports, wait_delivery
from .measure import Delta, delta, process_tree, rss_kb, snapshot
from .phases import (
    Context,
    await_ready,
    connected_or_fail,
    delivery_figures,
    delivery_phase,
    loss_check,
    publish_and_measure,
)
from .plan import SOAK_OPTIONS, WORKER_SCENARIOS, Options, Scale, client_label
from .servers import KEY_PREFIX, ServerProcess, gauges


async def scenario_fanout(ctx: Context) -> None:
    s = ctx.scale
    await delivery_phase(ctx, LoadGenSpec(s.fanout_clients, ctx.version), ["bench"],
                         s.fanout_events, 0)
    ctx.figures["clients"] = s.fanout_clients


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
        raw = [await lg.replies(published["per_channel"]) for lg in lgs]
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
    await delivery_phase(ctx, LoadGenSpec(s.fanout_clients, ctx.version,
                                          local_addresses=tuple(addresses)),
                         ["bench"], s.fanout_events, 0)
    ctx.figures.update({"clients": s.fanout_clients, "workers": workers,
                        "processes": len(process_tree(ctx.server.pid))})


async def scenario_channels(ctx: Context) -> None:
    s = ctx.scale
    template = "bench.{i}"
    channels = channel_names(None, template, s.channels)
    await delivery_phase(ctx, LoadGenSpec(s.channels, ctx.version, channel=None,
                                          channel_template=template),
                         channels, s.channel_events, 0)
    ctx.figures["clients"] = s.channels
    ctx.figures["channels"] = s.channels


def scenario_rate(rate: float) -> Callable[[Context], Awaitable[None]]:
    async def run(ctx: Context) -> None:
        s = ctx.scale
        await delivery_phase(ctx, LoadGenSpec(s.rate_clients, ctx.version), ["bench"],
                             int(rate * s.rate_seconds), rate)
        ctx.figures.update({"clients": s.rate_clients, "rate": rate})
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
