"""The reference's lock file: `<config dir>/<config name>.lock` holding `{"process": pid}`.

Deployment scripts written for laravel-echo-server rely on it: `start` refuses while the pid in
it lives, `start --force` replaces that server, `stop` ends it. The format is kept byte-for-byte
so either server can read the other's lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.05


class LockError(Exception):
    """The lock cannot be taken or the locked server cannot be stopped; message for humans."""


def lock_path_for(config_path: str) -> str:
    """`laravel-echo-server.json` locks `laravel-echo-server.lock` beside it, like the reference."""
    directory, name = os.path.split(config_path)
    stem = name[: -len(".json")] if name.endswith(".json") else name
    return os.path.join(directory, stem + ".lock")


def read_pid(path: str) -> int | None:
    """The pid in the lock, `None` when the file is missing; `LockError` when it is garbage."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise LockError(f"cannot read lock file {path}: {error}") from error
    try:
        data = json.loads(text)
        pid = int(data["process"])
    except (ValueError, TypeError, KeyError) as error:
        raise LockError(f"lock file {path} does not hold a process id") from error
    if pid <= 0:
        raise LockError(f"lock file {path} does not hold a process id")
    return pid


def _is_zombie(pid: int) -> bool:
    """An exited but unreaped process still answers signal 0; it is not a running server."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live process (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Poll until `pid` is gone; a process not our child cannot be waited on otherwise."""
    return _wait_until(lambda: not pid_alive(pid), timeout)


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def terminate(pid: int, grace: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds; True once the process is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_for_exit(pid, grace):
        return True
    logger.warning("process %d ignored SIGTERM for %.0f s; sending SIGKILL", pid, grace)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return wait_for_exit(pid, grace)


def _write_exclusive(path: str, pid: int) -> bool:
    """Create the lock only if absent, so two racing starts cannot both win."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps({"process": pid}, indent="\t"))
    return True


def _clear_previous(path: str, force: bool, grace: float) -> None:
    """Deal with an existing lock: refuse, kill its owner (`force`), or drop it as stale."""
    try:
        pid = read_pid(path)
    except LockError as error:
        logger.warning("%s; replacing it", error)
        pid = None
    if pid is not None and pid != os.getpid() and pid_alive(pid):
        if not force:
            raise LockError(
                f"There is already a server running (process {pid}, lock file {path}). "
                "Use the option '--force' to stop it and start another one."
            )
        logger.warning("Closing process %d because you used the '--force' option.", pid)
        if not terminate(pid, grace):
            raise LockError(f"process {pid} did not exit; lock file {path} left in place")
    elif pid is not None:
        logger.info("removing stale lock file %s (process %d is not running)", path, pid)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def acquire(path: str, force: bool = False, *, grace: float = 5.0) -> None:
    """Write our pid into the lock file, dealing with a previous owner first."""
    for _ in range(3):
        if os.path.exists(path):
            _clear_previous(path, force, grace)
        try:
            if _write_exclusive(path, os.getpid()):
                return
        except OSError as error:
            raise LockError(f"cannot write lock file {path}: {error}") from error
    raise LockError(f"another server keeps taking the lock file {path}")


def release(path: str) -> bool:
    """Remove the lock if it is still ours (a `--force` successor may own it now)."""
    try:
        if read_pid(path) != os.getpid():
            return False
        os.unlink(path)
    except (LockError, OSError):
        return False
    return True


def signal_owner(path: str, signum: int) -> int:
    """Send ``signum`` to the live server named in the lock; its pid."""
    pid = read_pid(path)
    if pid is None:
        raise LockError(f"no lock file {path}: no server runs with this config")
    if not pid_alive(pid):
        raise LockError(f"the server named in {path} (process {pid}) is not running")
    os.kill(pid, signum)
    return pid


def stop(path: str, timeout: float = 10.0) -> str:
    """Stop the server named in the lock; returns what happened, `LockError` if it failed.

    Like the reference, a missing lock or a dead process is not an error: there is nothing to
    stop. Unlike it, we wait for the server to finish shutting down before returning.
    """
    pid = read_pid(path)
    if pid is None:
        return f"Could not find any lock file ({path}); no server to stop."
    if not pid_alive(pid):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return f"No running servers to close (process {pid} is gone); removed the stale lock."
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not wait_for_exit(pid, timeout):
        raise LockError(f"process {pid} is still running {timeout:.0f} s after SIGTERM")
    with contextlib.suppress(LockError, OSError):
        if read_pid(path) == pid:
            os.unlink(path)
    return f"Closed the running server (process {pid})."
