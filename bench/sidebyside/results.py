"""What a run prints and keeps: the one-line summary after each scenario, the Markdown table
(one column per server and client version, ratios against the reference's socket.io-client 2
figure, each issue target and whether echo-server met it), the machine it ran on, the notes
and errors under the table, the JSON of every figure, and the entry ``--write-results``
appends to bench/RESULTS.md.

Its own module because the figures are gathered once and read many ways: which figure is a
row, how it is rounded and what target applies are decided here and nowhere else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from publisher import MESSAGE_BYTES

from .environment import BENCH, CACHE, cpu_count, package_version
from .plan import WORKER_SCENARIOS, Options, Scale, client_label
from .servers import REFERENCE_DIR


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


def add_comparisons(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    """The figures that set one scenario against another of the same column: ``fanout2``
    against ``fanout``, ``fanout-w2`` against ``fanout-w1``."""
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


def report(results: dict[str, dict[str, dict[str, Any]]], names: list[str],
           columns: list[tuple[str, str]], servers: list[str], versions: list[str],
           scale: Scale, info: dict[str, str], *, quick: bool, json_file: str | None,
           write_results: bool) -> list[str]:
    """Print the table, its notes and the errors; write the JSON of every figure (to
    ``json_file``, else bench/.cache/last-results.json) and, with ``write_results``, append
    the run to bench/RESULTS.md. Returns the errors: the run failed when there are any."""
    table = render_table(names, results, columns)
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    notes = []
    if "reference" in servers and "4" in versions:
        notes.append("The reference speaks Engine.IO 3 only (socket.io-client 4 gets "
                     "connect_error): both ratio columns divide by the reference's sio2 figure.")
    if quick:
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
        "mode": "quick" if quick else "full",
        "scale": dataclasses.asdict(scale),
        "machine": info,
        "results": results,
        "table": table,
        "notes": notes,
        "errors": errors,
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    json_path = Path(json_file) if json_file else CACHE / "last-results.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(output, indent=2, ensure_ascii=False))
    print(f"\nfull figures: {json_path}")
    if write_results:
        with (BENCH / "RESULTS.md").open("a") as out:
            out.write(f"\n## {output['when']} ({output['mode']})\n\n```\n{command}\n```\n\n")
            out.write("\n".join(f"- {k}: {v}" for k, v in info.items()) + "\n\n")
            out.write(table + "\n")
            for note in notes:
                out.write(f"\n{note}\n")
            for error in errors:
                out.write(f"\nERROR {error}\n")
        print(f"appended to {BENCH / 'RESULTS.md'}")
    return errors
