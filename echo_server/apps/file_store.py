"""Apps from laravel-echo-server.json: the reference's ``clients`` (the default app's API
clients, and Pusher apps when they have a ``secret``), our ``apps`` (``[{appId, key, secret,
...options}]``), and Reverb's ``.env``; and the ``apps:*`` commands' edits of the file.

An edit changes only the ``apps`` list, read from the file as written (no defaults, no
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


def indent_of(text: str) -> str | int:
    """Keep the file's own indentation (the reference writes tabs)."""
    match = re.search(r"\n([ \t]+)\S", text)
    if match is None or "\t" in match.group(1):
        return "\t"
    return len(match.group(1))


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    directory, name = os.path.split(path)
    with open(os.path.join(directory, f".{name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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

    def _read(self) -> tuple[dict[str, Any], str]:
        try:
            with open(self.path, encoding="utf-8-sig") as handle:
                text = handle.read()
        except FileNotFoundError:
            raise AppStoreError(f"config file {self.path} not found; create one with "
                                "`echo-server init`") from None
        try:
            data = json.loads(text)
        except ValueError as error:
            raise AppStoreError(f"config file {self.path} is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise AppStoreError(f"config file {self.path} must contain a JSON object")
        return data, text

    def _load(self, data: Mapping[str, Any]) -> None:
        try:
            self.replace(file_apps(data.get("clients"), data.get("apps"), self.environ))
        except AppConfigError as error:
            raise AppStoreError(f"{self.path}: {error}") from None

    async def start(self) -> None:
        self._load(self._read()[0])

    async def all(self) -> list[App]:
        """As the file says now (the commands read it without starting a store)."""
        await self.start()
        return await super().all()

    async def add(self, entry: Mapping[str, Any]) -> App:
        with _locked(self.path):
            data, text = self._read()
            apps = data.get("apps")
            if apps is None:
                data["apps"] = apps = []
            elif not isinstance(apps, list):
                raise AppStoreError(f"{self.path}: `apps` must be a list")
            app = parse_app(dict(entry), f"apps[{len(apps)}]")
            apps.append(dict(entry))
            self._load(data)  # a duplicate key or id is refused before anything is written
            _write_atomically(self.path, json.dumps(data, indent=indent_of(text),
                                                    ensure_ascii=False) + "\n")
        return app

    async def remove(self, app_id: str) -> bool:
        with _locked(self.path):
            data, text = self._read()
            apps = data.get("apps")
            if not isinstance(apps, list):
                return False
            kept = [entry for entry in apps if not (
                isinstance(entry, dict) and str(entry.get("appId", entry.get("id"))) == app_id)]
            if len(kept) == len(apps):
                return False
            data["apps"] = kept
            _write_atomically(self.path, json.dumps(data, indent=indent_of(text),
                                                    ensure_ascii=False) + "\n")
            self._load(data)
        return True
