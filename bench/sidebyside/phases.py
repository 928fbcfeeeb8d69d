"""The steps a scenario is built from: a ``Context`` (the server, Redis, the client version,
the run's options and the figures being gathered), connecting every client or failing,
waiting until every subscription is in place (``bench.ready``), publishing and measuring one
phase, turning a phase into the figures the table reads, and a short loss check after a
phase without deliveries.

Its own module because these steps are what makes two scenarios comparable: every scenario
in ``scenarios`` measures through the same ones, so a figure means the same in every row.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from publisher import publish, publish_ready

from .environment import BenchError
from .loadgen import LoadGen, LoadGenSpec, lg_reset, wait_delivery
from .measure import Delta, Snapshot, delta, snapshot
from .plan import Options, Scale
from .servers import (
    KEY_PREFIX,
    ServerProcess,
    broadcast_histogram,
    histogram_quantiles,
)


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


async def delivery_phase(ctx: Context, spec: LoadGenSpec, channels: list[str], count: int,
                         rate: float) -> None:
    """The clients of ``spec`` connected (1,000/s) and subscribed, ``count`` events published
    on ``channels`` at ``rate`` per second (0: as fast as possible), and what the clients got
    for it in ``ctx.figures``: the measured phase of the delivery scenarios."""
    lg = await ctx.loadgen(spec)
    try:
        await connected_or_fail(lg, 1000)
        await await_ready(ctx, lg, channels)
        published, d, report = await publish_and_measure(ctx, lg, channels, count, rate)
        delivery_figures(ctx, published, d, report)
    finally:
        await lg.close()


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
