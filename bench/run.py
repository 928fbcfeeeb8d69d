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

This file is the command line: its options, what they make of the run, and the loop over
scenarios and columns. The rest lives in bench/sidebyside/, one module a concern (its
``__init__`` lists them).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import resource
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from sidebyside.environment import (
    CACHE,
    BenchError,
    RedisServer,
    check_clock,
    cpu_count,
    ensure_loadgen_modules,
    raise_nofile,
)
from sidebyside.measure import ensure_nstat
from sidebyside.plan import (
    CLIENT_KINDS,
    FULL,
    OPT_IN,
    QUICK,
    REFERENCE_VERSIONS,
    SERVERS,
    WORKER_SCENARIOS,
    Options,
    client_label,
    scenario_names,
)
from sidebyside.results import add_comparisons, machine_info, report, summary_line
from sidebyside.scenarios import run_one
from sidebyside.servers import PUSHER_APP, ensure_reference, start_hanging_receiver


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

    add_comparisons(results)
    errors = report(results, names, columns, servers, versions, scale, info, quick=args.quick,
                    json_file=args.json, write_results=args.write_results)
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
