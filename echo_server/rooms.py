"""Which local sockets sit in which room.

This is the fan-out index: a dict of sets, read once per event. It only ever
holds this instance's sockets; cluster-wide figures (the HTTP API, metrics)
come from the state layer, which a multi-instance deployment backs with Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class Member(Protocol):
    id: str
    rooms: set[str]


class Rooms:
    __slots__ = ("_rooms",)

    def __init__(self) -> None:
        self._rooms: dict[str, set[Member]] = {}

    def join(self, room: str, member: Member) -> bool:
        """Add ``member``; False when it was already there."""
        members = self._rooms.get(room)
        if members is None:
            members = self._rooms[room] = set()
        elif member in members:
            return False
        members.add(member)
        member.rooms.add(room)
        return True

    def leave(self, room: str, member: Member) -> bool:
        members = self._rooms.get(room)
        if members is None or member not in members:
            return False
        members.discard(member)
        member.rooms.discard(room)
        if not members:
            del self._rooms[room]
        return True

    def leave_all(self, member: Member) -> list[str]:
        left = list(member.rooms)
        for room in left:
            self.leave(room, member)
        return left

    def members(self, room: str) -> set[Member] | None:
        """The live set (do not mutate); None when nobody is in ``room``."""
        return self._rooms.get(room)

    def contains(self, room: str, member: Member) -> bool:
        members = self._rooms.get(room)
        return members is not None and member in members

    def count(self, room: str) -> int:
        members = self._rooms.get(room)
        return len(members) if members else 0

    def __iter__(self) -> Iterator[str]:
        return iter(self._rooms)

    def __len__(self) -> int:
        return len(self._rooms)

    def counts(self) -> dict[str, int]:
        return {room: len(members) for room, members in self._rooms.items()}
