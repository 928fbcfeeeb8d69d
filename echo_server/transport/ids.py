"""Session and socket ids: 20 URL-safe characters from 15 random bytes, like engine.io's;
or, once a Pusher app is configured, the same 120 bits as ``<digits>.<digits>``: the only
form pusher-php-server (Laravel's ``reverb``/``pusher`` driver) accepts as a socket id, in
``toOthers()`` and ``/broadcasting/auth``, whichever kind of client the id belongs to.

An engine sid is a bearer credential for polling requests, so it must come from the OS's
CSPRNG; reading 15 bytes per id costs a syscall per connection in a connection storm, so the
randomness is read in blocks and sliced.
"""

from __future__ import annotations

import base64
import os

_BLOCK = 15 * 256


class IdSource:
    __slots__ = ("_buffer", "_pos", "numeric")

    def __init__(self) -> None:
        self._buffer = b""
        self._pos = 0
        self.numeric = False

    def new(self) -> str:
        pos = self._pos
        if pos + 15 > len(self._buffer):
            self._buffer = os.urandom(_BLOCK)
            pos = 0
        self._pos = pos + 15
        chunk = self._buffer[pos:pos + 15]
        if self.numeric:
            bits = int.from_bytes(chunk, "big")
            return f"{bits >> 60}.{bits & _LOW_60}"
        return base64.urlsafe_b64encode(chunk).decode("ascii")


_LOW_60 = (1 << 60) - 1
_source = IdSource()
new_id = _source.new


def numeric_ids(on: bool) -> None:
    """Hand out ``<digits>.<digits>`` ids from now on (a Pusher app is configured)."""
    _source.numeric = on
