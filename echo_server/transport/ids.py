"""Session and socket ids: 20 URL-safe characters from 15 random bytes, like engine.io's.

An engine sid is a bearer credential for polling requests, so it must come from the OS's
CSPRNG; reading 15 bytes per id costs a syscall per connection in a connection storm, so the
randomness is read in blocks and sliced.
"""

from __future__ import annotations

import base64
import os

_BLOCK = 15 * 256


class IdSource:
    __slots__ = ("_buffer", "_pos")

    def __init__(self) -> None:
        self._buffer = b""
        self._pos = 0

    def new(self) -> str:
        pos = self._pos
        if pos + 15 > len(self._buffer):
            self._buffer = os.urandom(_BLOCK)
            pos = 0
        self._pos = pos + 15
        return base64.urlsafe_b64encode(self._buffer[pos:pos + 15]).decode("ascii")


new_id = IdSource().new
