"""What a process costs, read from /proc around a measured phase: CPU (utime+stime in clock
ticks, and every thread's schedstat in nanoseconds), stime alone, the server core's softirq
time, write system calls (``syscw`` of /proc/<pid>/io), RSS, and the namespace's listen-queue
overflows; summed over a server's process tree (a parent and its ``--workers``).

Its own module because it is the bench's instrument, the same for every server and every
runner: a ``snapshot`` before, one after, and their ``delta``. How the figures are read is
explained in bench/README.md ("How it measures").
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


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
