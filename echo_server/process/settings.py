"""The process's part of ``laravel-echo-server.json``: where it listens (``host``, ``port``,
``protocol``, the TLS files), ``devMode``, its workers (``workers``, ``workerPorts``), its
name (``instanceId``) and its log format (``log``)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from echo_common.values import js_string, optional_str, positive_int

from . import logformat

# The reference's own port sanitiser: two to five trailing digits, optional trailing slash.
_PORT_PATTERN = re.compile(r"([0-9]{2,5})/?$")


def parse_port(value: Any) -> int:
    """The reference keeps only the trailing digits, so `"http://host:6001"` means 6001.

    0 asks the OS for a free port (tests and embedding use it)."""
    if js_string(value) == "0":
        return 0
    match = _PORT_PATTERN.search(js_string(value))
    if match is None or not 0 <= int(match.group(1)) < 65536:
        raise ValueError(f"port: cannot find a port number in {value!r}")
    return int(match.group(1))


def parse_log_format(section: Any, environ: Mapping[str, str]) -> str:
    """Ours: `ECHO_LOG_FORMAT` over `log.format`, "text" (default) or "json" (one JSON object
    per line, for log pipelines: see logformat.py)."""
    if section is not None and not isinstance(section, dict):
        raise ValueError('`log` must be an object, e.g. {"format": "json"}')
    value = environ.get("ECHO_LOG_FORMAT") or (section or {}).get("format") or "text"
    if value not in logformat.FORMATS:
        raise ValueError(f"log format {value!r} (ECHO_LOG_FORMAT or log.format) is not one "
                         "of " + ", ".join(repr(name) for name in logformat.FORMATS))
    return str(value)


def parse_workers(value: Any) -> int:
    """A positive number of worker processes, or "auto": the cores this process may use."""
    if value == "auto":  # the cores this process may run on (its affinity: containers)
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    return positive_int(value, "workers (a number, or \"auto\")")


def parse_worker_ports(value: Any, workers: int) -> list[int]:
    """`workerPorts`: each worker's own port besides the shared one, for a proxy in front (it
    connects from one address, which the shared port's hashing would put on one worker): the
    first of ``workers`` consecutive ports, or one per worker (`6002`, `"6002,6003"`,
    `[6002, 6003]`)."""
    name = "workerPorts (the first port, or one port per worker)"
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, list):
        ports = [positive_int(port, name) for port in value]
        if len(ports) != workers:
            raise ValueError(f"workerPorts lists {len(ports)} ports for {workers} workers")
    else:
        first = positive_int(value, name)
        ports = list(range(first, first + workers))
    if max(ports) > 65535:
        raise ValueError(f"workerPorts: {max(ports)} is not a port")
    return ports


class ProcessSettings:
    """The process's options, as properties of ``Config``."""

    raw: dict[str, Any]
    environ: dict[str, str]

    @property
    def host(self) -> str | None:
        return optional_str(self.raw.get("host"))

    @property
    def port(self) -> int:
        return parse_port(self.raw.get("port"))

    @property
    def protocol(self) -> str:
        return str(self.raw.get("protocol") or "http").lower()

    @property
    def ssl_cert_path(self) -> str | None:
        return optional_str(self.raw.get("sslCertPath"))

    @property
    def ssl_key_path(self) -> str | None:
        return optional_str(self.raw.get("sslKeyPath"))

    @property
    def ssl_chain_path(self) -> str | None:
        return optional_str(self.raw.get("sslCertChainPath"))

    @property
    def ssl_passphrase(self) -> str | None:
        return optional_str(self.raw.get("sslPassphrase"))

    @property
    def ssl_secure_options(self) -> int:
        """OpenSSL option bits (`ssl.OP_*`, same values as Node's `constants.SSL_OP_*`)."""
        value = self.raw.get("secureOptions") or 0
        try:
            bits = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"secureOptions must be an integer, not {value!r}") from None
        if isinstance(value, bool | float) or not 0 <= bits < 2**63:
            raise ValueError(f"secureOptions must be a non-negative integer, not {value!r}")
        return bits

    @property
    def dev_mode(self) -> bool:
        return self.raw.get("devMode") is True

    @property
    def workers(self) -> int:
        """Ours: processes serving the port (`ECHO_WORKERS` over `workers`; default 1)."""
        return parse_workers(self.environ.get("ECHO_WORKERS") or self.raw.get("workers", 1))

    @property
    def worker_ports(self) -> Any:
        """Ours: `ECHO_WORKER_PORTS` over `workerPorts`, as given (None when unset): which
        ports depends on the number of workers (`parse_worker_ports`)."""
        return self.environ.get("ECHO_WORKER_PORTS") or self.raw.get("workerPorts")

    @property
    def instance_id(self) -> str | None:
        """Ours: a name for this instance that survives restarts (`ECHO_INSTANCE_ID` over
        `instanceId`); a stream source names its consumer group after it."""
        value = self.environ.get("ECHO_INSTANCE_ID") or self.raw.get("instanceId")
        return str(value) if value not in (None, "") else None

    @property
    def log_format(self) -> str:
        return parse_log_format(self.raw.get("log"), self.environ)
