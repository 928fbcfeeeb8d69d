"""Which local connections sit in which channel, grouped by wire format.

This is the fan-out index, read once per event: channel -> wire -> set of connections. The
grouping lets fan-out build one frame per wire format present in the channel and hand each
wire its own set, so the loop over recipients is the adapter's and stays as tight as when
there was one protocol. It only ever holds this instance's connections; cluster-wide figures
(the HTTP API, metrics) come from the state layer, which several instances back with Redis.

A wire's members are a tuple while there is one (most channels: a user's private channel, an
attacker's), a set from two on: an empty set costs 216 bytes, a 1-tuple 48, and both are
iterated and tested for membership by the wires alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .connection import Connection, Wire

Members = tuple[Connection, ...] | set[Connection]
Groups = dict[Wire[Any], Members]


class Rooms:
    __slots__ = ("_rooms", "groups")

    def __init__(self) -> None:
        self._rooms: dict[str, Groups] = {}
        # The live groups of a room (do not mutate), None when nobody is in it: the dict's
        # own lookup, so fan-out pays no Python call for it.
        self.groups: Callable[[str], Groups | None] = self._rooms.get

    def join(self, room: str, member: Connection) -> bool:
        """Add ``member``; False when it was already there."""
        state = member.state
        groups = self._rooms.get(room)
        if groups is None:
            self._rooms[room] = {state.wire: (member,)}
        else:
            members = groups.get(state.wire)
            if members is None:
                groups[state.wire] = (member,)
            elif member in members:
                return False
            elif type(members) is tuple:
                groups[state.wire] = {members[0], member}
            else:
                members.add(member)  # type: ignore[union-attr]
        state.channels.add(room)
        return True

    def leave(self, room: str, member: Connection) -> bool:
        state = member.state
        groups = self._rooms.get(room)
        members = groups.get(state.wire) if groups is not None else None
        if members is None or member not in members:
            return False
        state.channels.discard(room)
        if type(members) is tuple:  # its only member
            del groups[state.wire]  # type: ignore[union-attr]
            if not groups:
                del self._rooms[room]
        else:
            members.discard(member)  # type: ignore[union-attr]
            if len(members) == 1:
                groups[state.wire] = tuple(members)  # type: ignore[index]
        return True

    def contains(self, room: str, member: Connection) -> bool:
        groups = self._rooms.get(room)
        members = groups.get(member.state.wire) if groups is not None else None
        return members is not None and member in members

    def members(self, room: str) -> list[Connection]:
        groups = self._rooms.get(room)
        return [m for members in groups.values() for m in members] if groups else []

    def count(self, room: str) -> int:
        groups = self._rooms.get(room)
        return sum(map(len, groups.values())) if groups else 0

    def __contains__(self, room: object) -> bool:
        return room in self._rooms

    def __iter__(self) -> Iterator[str]:
        return iter(self._rooms)

    def __len__(self) -> int:
        return len(self._rooms)

    def counts(self) -> dict[str, int]:
        return {room: sum(map(len, groups.values())) for room, groups in self._rooms.items()}
