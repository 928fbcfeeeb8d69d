"""The side-by-side benchmark: a server under test next to another, on the same machine, in
the same run, with the same clients. ``bench/run.py`` (echo-server next to laravel-echo-server
1.6.3) is its command line; ``bench/pusher_api.py`` (next to Soketi) borrows the machine, the
servers, the measurements and the load generator from it.

One module a concern, each importing only those above it in this list:

- ``environment``: what the machine must provide first (ports, Redis, npm installs, open
  files, the clock, the CPUs), and ``BenchError``.
- ``measure``: what a process costs, from /proc, before and after a phase.
- ``servers``: echo-server and the reference, configured, started and stopped alike; what
  echo-server reports on ``/metrics``.
- ``plan``: the sizes, the scenarios' names, the table's columns, the run's options.
- ``loadgen``: the node workers of bench/loadgen.mjs, driven and their reports merged.
- ``phases``: the steps every scenario measures with.
- ``scenarios``: one function a scenario, and one scenario run against a fresh server.
- ``results``: the summary lines, the table, the machine, the JSON and bench/RESULTS.md.

The modules import bench/publisher.py as ``publisher``: whoever imports them has bench/ on
``sys.path`` (a script in bench/ has it there from the start).
"""
