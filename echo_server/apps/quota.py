"""A Pusher app's `maxConnections`, held over the whole server: under `--workers N` every
worker counts against the one bound (30 is 30, not 30 per worker).

The workers share counts in files of the directory only the server's user may enter (the
one the parent made for them, `siblings.py`): one file per app, one 8-byte count per worker
slot, mapped shared by every worker. A worker writes only its own slot. A connection is taken
under a POSIX record lock on the file (``fcntl.lockf``: the kernel releases it if its holder
dies), after summing every slot, so that two workers cannot both take the last one; it is
given back without the lock (the worker's own slot). A worker started again into its slot
zeroes its slot first: its previous life's connections died with it. One process counts in
memory. No Redis round trip at the upgrade, and none of Redis's failure modes in it.

Other instances on the same Redis count too, less exactly: each tells its own connections
(``own``) at every cluster heartbeat, and the bound taken here is what the others told last
(``core.cluster.Cluster.elsewhere``, the caller's to subtract). Up to a heartbeat old, so a
burst on two instances at the same moment may pass the bound by what came in meanwhile.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
from collections import Counter
from pathlib import Path

_SUFFIX = ".connections"
_SLOT_BYTES = 8


class AppQuota:
    """Open connections by app (``seats.seat_name``), in this process."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def take(self, name: str, limit: int) -> bool:
        """One more connection of ``name``, unless ``limit`` (> 0) are open already."""
        if self._counts[name] >= limit:
            return False
        self._counts[name] += 1
        return True

    def add(self, name: str) -> None:
        """One more, with no bound to check (an app without `maxConnections`)."""
        self._counts[name] += 1

    def give(self, name: str) -> None:
        self._counts[name] -= 1

    def count(self, name: str) -> int:
        return self._counts[name]

    def own(self) -> dict[str, int]:
        """This process's open connections by app, for the other instances."""
        return {name: count for name, count in self._counts.items() if count}


class SharedAppQuota:
    """The same, counted with the other workers of this server."""

    def __init__(self, directory: str, slot: int, slots: int) -> None:
        self.directory = Path(directory)
        self.slot = slot
        self.slots = slots
        self._files: dict[str, tuple[int, memoryview]] = {}
        for path in self.directory.glob("*" + _SUFFIX):  # a restarted worker's old counts
            fd, counts = self._counter(path)
            counts[slot] = 0
            counts.release()
            os.close(fd)

    def _counter(self, path: Path) -> tuple[int, memoryview]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        size = self.slots * _SLOT_BYTES
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)  # zeros; every worker asks for the same size
        return fd, memoryview(mmap.mmap(fd, size)).cast("q")

    def _of(self, name: str) -> tuple[int, memoryview]:
        found = self._files.get(name)
        if found is None:
            file = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]
            found = self._files[name] = self._counter(self.directory / (file + _SUFFIX))
        return found

    def take(self, name: str, limit: int) -> bool:
        fd, counts = self._of(name)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            if sum(counts) >= limit:
                return False
            counts[self.slot] += 1
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)
        return True

    def add(self, name: str) -> None:
        self._of(name)[1][self.slot] += 1

    def give(self, name: str) -> None:
        self._of(name)[1][self.slot] -= 1

    def count(self, name: str) -> int:
        """Every worker's, without the lock: a figure, not a decision."""
        return sum(self._of(name)[1])

    def own(self) -> dict[str, int]:
        """This worker's open connections by app (its own slot), for the other instances:
        its siblings read the others' slots here, exactly."""
        slot = self.slot
        return {name: counts[slot] for name, (_, counts) in self._files.items() if counts[slot]}
