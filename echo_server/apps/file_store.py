"""Apps from laravel-echo-server.json: the reference's ``clients`` (the default app's API
clients, and Pusher apps when they have a ``secret``), our ``apps`` (``[{appId, key, secret,
...options}]``), and Reverb's ``.env``; and the edits of the file, by ``apps:*`` and
``client:add``/``client:remove`` (``editing``).

An edit changes only its own list, read from the file as written (no defaults, no
environment: those must never be written into it), keeps the file's indentation, and is
atomic: a temporary file beside it, flushed, then renamed over it, under a lock beside it so
two commands never lose each other's change. A config file bind-mounted into a container
cannot be renamed over; it is then written in place.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

from .model import App, AppConfigError, check_unique, parse_app, parse_apps
from .reverb import reverb_app
from .store import AppStoreError, StaticStore


def file_apps(clients: Any, apps: Any, environ: Mapping[str, str]) -> list[App]:
    """The legacy ``clients`` (as before: duplicates among them allowed, the last one wins a
    lookup), the ``apps`` (unique keys and ids, none shared with a client), and Reverb's app
    unless a client has its key."""
    legacy = parse_apps(clients if clients is not None else [], "clients", legacy=True)
    found = legacy
    if apps is not None:
        own = parse_apps(apps, "apps")
        check_unique(own, legacy)
        found = legacy + own
    reverb = reverb_app(environ)
    if reverb is not None and all(app.key != reverb.key for app in found):
        found.append(reverb)
    return found


def _indent_of(text: str) -> str | int:
    """Keep the file's own indentation (the reference writes tabs)."""
    match = re.search(r"\n([ \t]+)\S", text)
    if match is None or "\t" in match.group(1):
        return "\t"
    return len(match.group(1))


def _not_found(path: str) -> AppStoreError:
    return AppStoreError(f"config file {path} not found; create one with `echo-server init`")


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    directory, name = os.path.split(path)
    try:
        lock = open(os.path.join(directory, f".{name}.lock"), "a")  # noqa: SIM115
    except FileNotFoundError:
        raise _not_found(path) from None  # its directory too
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: str) -> tuple[dict[str, Any], str]:
    """The file's object as written, and its text."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise _not_found(path) from None
    except (OSError, UnicodeDecodeError) as error:
        raise AppStoreError(f"cannot read config file {path}: {error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise AppStoreError(f"config file {path} is not valid JSON: {error.msg} "
                            f"(line {error.lineno}, column {error.colno})") from None
    if not isinstance(data, dict):
        raise AppStoreError(f"config file {path} must contain a JSON object")
    return data, text


@contextlib.contextmanager
def editing(path: str) -> Iterator[dict[str, Any]]:
    """The file's object, to change in the block: written back (atomically, in the file's
    indentation) if the block changed it and raised nothing, all under the file's lock.
    AppStoreError when the file is missing or not a JSON object."""
    with _locked(path):
        data, text = _read(path)
        yield data
        if data != json.loads(text):
            _write_atomically(path, json.dumps(data, indent=_indent_of(text),
                                               ensure_ascii=False) + "\n")


def _write_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(path) or "."
    fd, temporary = tempfile.mkstemp(prefix=".apps-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(OSError):
            os.chmod(temporary, os.stat(path).st_mode & 0o7777)
        try:
            os.replace(temporary, path)
        except OSError as error:
            if error.errno not in (errno.EBUSY, errno.EXDEV):
                raise
            with open(path, "w", encoding="utf-8") as handle:  # a bind-mounted file
                handle.write(text)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


class FileStore(StaticStore):
    """The apps of one config file; ``add`` and ``remove`` edit its ``apps`` list."""

    kind = "file"
    writable = True

    def __init__(self, path: str, environ: Mapping[str, str]) -> None:
        super().__init__()
        self.path = path
        self.environ = environ

    def _load(self, data: Mapping[str, Any]) -> None:
        try:
            self.replace(file_apps(data.get("clients"), data.get("apps"), self.environ))
        except AppConfigError as error:
            raise AppStoreError(f"{self.path}: {error}") from None

    async def start(self) -> None:
        self._load(_read(self.path)[0])

    async def all(self) -> list[App]:
        """As the file says now (the commands read it without starting a store)."""
        await self.start()
        return await super().all()

    async def add(self, entry: Mapping[str, Any]) -> App:
        with editing(self.path) as data:
            apps = data.get("apps")
            if apps is None:
                data["apps"] = apps = []
            elif not isinstance(apps, list):
                raise AppStoreError(f"{self.path}: `apps` must be a list")
            app = parse_app(dict(entry), f"apps[{len(apps)}]")
            apps.append(dict(entry))
            self._load(data)  # a duplicate key or id is refused before anything is written
        return app

    async def remove(self, app_id: str) -> bool:
        with editing(self.path) as data:
            apps = data.get("apps")
            if not isinstance(apps, list):
                return False
            kept = [entry for entry in apps if not (
                isinstance(entry, dict) and str(entry.get("appId", entry.get("id"))) == app_id)]
            if len(kept) == len(apps):
                return False
            data["apps"] = kept
        self._load(data)
        return True
