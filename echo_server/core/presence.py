"""Presence members behind one interface, in memory (one instance) or in Redis (many).

A member is one socket of a user in a channel. Users are compared loosely, as
the reference does (``1`` and ``"1"`` are one user), so a user with two tabs
is one member of ``here()``, joins once and leaves once.

The Redis layout is a hash per channel, one field per socket (prefixed with
the instance id), updated by Lua scripts: a join or leave touches its own
field atomically, so concurrent joins never lose each other (the reference
rewrites one JSON list per channel with GET then SET and loses members).
It differs from the reference's ``<keyPrefix><channel>:members`` list, so an
old and a new server cannot share presence state during a migration.

Every write also returns a version: a number that grows with every presence write, in the
order the writes took effect. Instances announce joining and leaving in their own order
(at once for their sockets, later through the relay for the others'), and a socket may go
while its join is being written: the version says which of two announcements is the later
one, and whether anything was written since a join that must be taken back. In Redis it is
a clock (``<tag>:presence-clock``): the server's time in microseconds, or one more than the
last version when that is later. So it never goes back, and when Redis loses its data it
starts again from the time, above the versions it gave before (unless it comes back on a
host whose clock is behind).

Every key of echo-server starts with one hash tag per keyPrefix (`key_tag`), so on a Redis
Cluster they all live in one slot: the scripts touch three keys (the channel's hash, the set
of presence channels, the clock) and the cluster code reads several at once, which a Cluster
allows only within one slot. Plain Redis and Sentinel use the same layout, so there is one
layout.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError


def key_tag(key_prefix: str) -> str:
    """``{<keyPrefix>echo}``: the hash tag that starts every key echo-server writes. Braces in
    the prefix are left out, since a ``}`` would end the tag early (an empty tag would let a
    Cluster spread the keys over slots)."""
    return "{" + key_prefix.replace("{", "").replace("}", "") + "echo}"


class LuaScript:
    """EVALSHA, and EVAL when the server does not know the script yet (EVAL caches it there).

    redis-py's `register_script` answers NOSCRIPT with SCRIPT LOAD, which a Cluster client
    sends to every primary: while any one of them is down, every script would fail, also on
    the nodes that are up. This way a script only ever talks to the node of its keys."""

    def __init__(self, client: Any, text: str) -> None:
        self.client = client
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.client.eval(self.text, len(keys), *keys, *args)


def user_key(user_id: Any) -> str:
    """Loose equality of user ids, as JavaScript's ``==`` between a number and a string."""
    if isinstance(user_id, bool):
        return "b:" + str(user_id).lower()
    if isinstance(user_id, float) and user_id.is_integer():
        return "v:" + str(int(user_id))
    if isinstance(user_id, (int, float, str)):
        return "v:" + str(user_id)
    return "j:" + json.dumps(user_id, sort_keys=True, separators=(",", ":"))


@dataclass(slots=True)
class Member:
    user_id: Any
    user_info: Any
    joined: float = 0.0

    def public(self) -> dict[str, Any]:
        """What clients see: never the socket id (the reference leaks it; Echo never reads it)."""
        return {"user_id": self.user_id, "user_info": self.user_info}


@dataclass(slots=True)
class JoinResult:
    first_for_user: bool  # the user had no socket in the channel before (this one included)
    added: bool  # the socket was no member before (not a second subscribe)
    members: list[Member]  # one per user, newest first
    version: int


@dataclass(slots=True)
class LeaveResult:
    member: Member | None  # None when the socket was no member (or was taken back unseen)
    last_for_user: bool
    version: int


def _one_per_user_newest_first(entries: list[Member]) -> list[Member]:
    newest: dict[str, Member] = {}
    for member in entries:
        key = user_key(member.user_id)
        if key not in newest or member.joined > newest[key].joined:
            newest[key] = member
    return sorted(newest.values(), key=lambda m: m.joined, reverse=True)


class PresenceStore(ABC):
    @abstractmethod
    async def join(self, channel: str, socket_id: str, member: Member) -> JoinResult: ...

    @abstractmethod
    async def leave(self, channel: str, socket_id: str, *,
                    unless_changed_since: int | None = None) -> LeaveResult:
        """With ``unless_changed_since`` (a join's version): when no presence write came after
        that join, nobody can have counted the member, so it is taken back unseen (the result
        names no member: nothing to announce); otherwise it leaves as any member does."""

    @abstractmethod
    async def members(self, channel: str) -> list[Member]:
        """One entry per user, newest first."""

    async def close(self) -> None:
        return None


class MemoryPresenceStore(PresenceStore):
    def __init__(self) -> None:
        self._channels: dict[str, dict[str, Member]] = {}
        self._version = 0

    def _tick(self) -> int:
        self._version += 1
        return self._version

    async def join(self, channel: str, socket_id: str, member: Member) -> JoinResult:
        sockets = self._channels.setdefault(channel, {})
        key = user_key(member.user_id)
        first = not any(user_key(m.user_id) == key for m in sockets.values())
        added = socket_id not in sockets
        version = self._tick()
        member.joined = float(version)
        sockets[socket_id] = member
        return JoinResult(first, added, _one_per_user_newest_first(list(sockets.values())),
                          version)

    async def leave(self, channel: str, socket_id: str, *,
                    unless_changed_since: int | None = None) -> LeaveResult:
        sockets = self._channels.get(channel)
        if sockets is None or socket_id not in sockets:
            return LeaveResult(None, False, 0)
        member = sockets.pop(socket_id)
        if not sockets:
            del self._channels[channel]
        if unless_changed_since == self._version:
            return LeaveResult(None, False, 0)
        key = user_key(member.user_id)
        last = not any(user_key(m.user_id) == key for m in sockets.values())
        return LeaveResult(member, last, self._tick())

    async def members(self, channel: str) -> list[Member]:
        return _one_per_user_newest_first(list(self._channels.get(channel, {}).values()))


# Every script: KEYS[1] = channel hash, KEYS[2] = the set of presence channels, KEYS[3] = the
# clock. TIME before a write needs effects replication, the default only from Redis 5 on.
_TICK = """
redis.replicate_commands()
local function tick()
  local now = redis.call('TIME')
  local version = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local last = tonumber(redis.call('GET', KEYS[3]) or '0')
  if version <= last then version = last + 1 end
  redis.call('SET', KEYS[3], string.format('%.0f', version))
  return version
end
"""

# ARGV = field, user key, member JSON, channel name.
# Returns {first (0/1), added (0/1), version, all member JSONs}.
_JOIN = _TICK + """
local first = 1
for _, value in ipairs(redis.call('HVALS', KEYS[1])) do
  if cjson.decode(value)['k'] == ARGV[2] then first = 0 end
end
local added = redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
return {first, added, tick(), redis.call('HVALS', KEYS[1])}
"""

# ARGV = field, channel name[, the version that must still be the clock's to take it back
# unseen]. Returns {member JSON or false, last (0/1), version}.
_LEAVE = _TICK + """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return {false, 0, 0} end
redis.call('HDEL', KEYS[1], ARGV[1])
local fields = redis.call('HVALS', KEYS[1])
if #fields == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
if ARGV[3] and redis.call('GET', KEYS[3]) == ARGV[3] then return {false, 0, 0} end
local key = cjson.decode(value)['k']
for i = 1, #fields do
  if cjson.decode(fields[i])['k'] == key then return {value, 0, tick()} end
end
return {value, 1, tick()}
"""

# ARGV[1] = "<instance>:" field prefix, ARGV[2] = channel name. Removes that instance's
# members; returns {version, the JSON of each removed member whose user has no socket left
# (one per user)}, so their leaving can be announced.
_PURGE = _TICK + """
local fields = redis.call('HGETALL', KEYS[1])
local removed = {}
local n = string.len(ARGV[1])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, n) == ARGV[1] then
    redis.call('HDEL', KEYS[1], fields[i])
    table.insert(removed, fields[i + 1])
  end
end
local remaining = {}
for _, value in ipairs(redis.call('HVALS', KEYS[1])) do
  remaining[cjson.decode(value)['k']] = true
end
local gone, seen = {}, {}
for _, value in ipairs(removed) do
  local key = cjson.decode(value)['k']
  if not remaining[key] and not seen[key] then
    seen[key] = true
    table.insert(gone, value)
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
if #removed == 0 then return {0, gone} end
return {tick(), gone}
"""


class RedisPresenceStore(PresenceStore):
    """Presence shared by every instance on one Redis."""

    def __init__(self, client: Any, *, key_prefix: str = "", instance_id: str = "",
                 max_in_flight: int = 32) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.tag = key_tag(key_prefix)
        self.instance_id = instance_id
        self._join = LuaScript(client, _JOIN)
        self._leave = LuaScript(client, _LEAVE)
        self._purge = LuaScript(client, _PURGE)
        # redis-py's pool raises instead of waiting beyond max_connections (100 by default):
        # a burst of joins (every tab resubscribing after a restart) or of leaves (a restart)
        # would lose members or leave ghosts. Bursts queue here instead.
        self._in_flight = asyncio.Semaphore(max_in_flight)

    def _key(self, channel: str) -> str:
        return f"{self.tag}:presence:{channel}"

    @property
    def channels_key(self) -> str:
        return f"{self.tag}:presence-channels"

    def _keys(self, channel: str) -> list[str]:
        return [self._key(channel), self.channels_key, f"{self.tag}:presence-clock"]

    def _field(self, socket_id: str) -> str:
        return f"{self.instance_id}:{socket_id}"

    @staticmethod
    def _decode(raw: bytes | str) -> Member:
        data = json.loads(raw)
        return Member(data["u"], data.get("i"), float(data.get("t", 0)))

    async def join(self, channel: str, socket_id: str, member: Member) -> JoinResult:
        member.joined = time.time()
        value = json.dumps({"u": member.user_id, "i": member.user_info, "t": member.joined,
                            "k": user_key(member.user_id)}, separators=(",", ":"))
        async with self._in_flight:
            first, added, version, values = await self._join(
                keys=self._keys(channel),
                args=[self._field(socket_id), user_key(member.user_id), value, channel])
        members = [self._decode(v) for v in values]
        return JoinResult(bool(first), bool(added), _one_per_user_newest_first(members),
                          version)

    async def leave(self, channel: str, socket_id: str, *,
                    unless_changed_since: int | None = None) -> LeaveResult:
        args: list[Any] = [self._field(socket_id), channel]
        if unless_changed_since is not None:
            args.append(str(unless_changed_since))
        async with self._in_flight:
            value, last, version = await self._leave(keys=self._keys(channel), args=args)
        if not value:
            return LeaveResult(None, False, 0)
        return LeaveResult(self._decode(value), bool(last), version)

    async def members(self, channel: str) -> list[Member]:
        async with self._in_flight:
            values = await self.client.hvals(self._key(channel))
        return _one_per_user_newest_first([self._decode(v) for v in values])

    async def purge_instance(self, instance_id: str) -> list[tuple[str, Member, int]]:
        """Drop every member an instance left behind (it died); returns (channel, member,
        version) for each user who is now gone from that channel."""
        gone: list[tuple[str, Member, int]] = []
        for raw in await self.client.smembers(self.channels_key):
            channel = raw.decode() if isinstance(raw, bytes) else str(raw)
            async with self._in_flight:
                version, values = await self._purge(keys=self._keys(channel),
                                                    args=[f"{instance_id}:", channel])
            gone.extend((channel, self._decode(v), version) for v in values)
        return gone
