"""What a run is made of: the sizes of every scenario (full and ``--quick``), the scenarios'
names and which run only when named, the servers and client kinds that make the table's
columns, and the options one run gives every scenario.

Its own module because everything else reads it and it reads almost nothing: the CLI builds
an ``Options`` from it, the scenarios take their counts from its ``Scale``, the table names its
columns with ``client_label``. To scale a scenario up (for a profile that outlasts a
recording), this is the file to edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .servers import PUSHER_APP

SERVERS = ("echo-server", "reference")
# laravel-echo-server 1.6.3 is socket.io 2 (Engine.IO 3): socket.io-client 3/4 get connect_error.
REFERENCE_VERSIONS = ("2",)
# --client-versions: socket.io-client majors, and "pusher" for pusher-js (echo-server only).
CLIENT_KINDS = ("2", "4", "pusher")


def client_label(version: str) -> str:
    return "pusher-js" if version == "pusher" else f"sio{version}"


@dataclass(frozen=True)
class Scale:
    fanout_clients: int
    fanout_events: int
    channels: int
    channel_events: int
    rate_clients: int
    rate_seconds: float
    idle: tuple[int, ...]
    storm_clients: int
    polling_clients: int
    polling_rate: float
    polling_seconds: float
    soak: Soak


@dataclass(frozen=True)
class Soak:
    """The soak: many clients for long under subscribe and connection churn with events
    flowing; what it watches is whether memory settles: RSS at the end against RSS at 30 %
    of the run (minute 3 of 10), once the allocator has reached its working size.

    echo-server runs it as a server exposed to all of it would: connection-state recovery
    on (short-lived clients that drop without a goodbye are parked for the window), Redis
    for presence, the cluster and channel occupancy, and Pusher clients (pusher-js, a share
    of the clients, on channels of their own) next to the column's Socket.IO ones."""
    clients: int
    seconds: float
    event_rate: float  # events/s, round-robin over the clients' own channels
    subscribes: float  # leave one channel and join a new one, per second
    connections: float  # short-lived extra clients, per second
    drops: float = 0.0  # short-lived extra clients that drop instead of closing, per second
    pusher_share: float = 0.1  # of the clients, pusher-js ones (echo-server only)
    sample_s: float = 10.0


FULL = Scale(fanout_clients=1000, fanout_events=2000, channels=2000, channel_events=20_000,
             rate_clients=1000, rate_seconds=30, idle=(5000, 15_000), storm_clients=2000,
             polling_clients=500, polling_rate=20, polling_seconds=20,
             soak=Soak(15_000, 600, event_rate=200, subscribes=100, connections=10, drops=5))
QUICK = Scale(fanout_clients=200, fanout_events=300, channels=300, channel_events=3000,
              rate_clients=200, rate_seconds=5, idle=(1000,), storm_clients=300,
              polling_clients=100, polling_rate=10, polling_seconds=4,
              soak=Soak(1000, 60, event_rate=100, subscribes=50, connections=5, drops=3,
                        sample_s=2.0))
# `fanout` against `echo-server start --workers N` (echo-server only): N by scenario.
WORKER_SCENARIOS = {"fanout-w1": 1, "fanout-w2": 2}
# Scenarios run only when named in --only (the soak takes ten minutes per column).
OPT_IN = ("soak",)
# What echo-server runs the soak with, besides the run's own options (Soak's docstring):
# recovery, and the Pusher app its pusher-js clients connect with. Redis (presence, cluster,
# occupancy) is every scenario's `database`.
SOAK_OPTIONS: dict[str, Any] = {"socketio": {"connectionStateRecovery": {}},
                                "clients": [PUSHER_APP]}


def scenario_names(scale: Scale) -> list[str]:
    names = ["fanout", "fanout2", *WORKER_SCENARIOS, "channels", "rate10", "rate100"]
    names += [f"idle-{n}" for n in scale.idle]
    names += ["storm-ws", "storm-upgrade", "polling"]
    return names


@dataclass
class Options:
    quick: bool
    scale: Scale
    server_cpu: int | None
    loadgen_cpu: int | None
    workers: int | None
    nofile: int
    # echo-server options of this run (--recovery, --webhooks-hang)
    extra: dict[str, Any] = field(default_factory=dict)
