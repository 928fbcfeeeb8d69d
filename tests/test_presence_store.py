"""The presence stores themselves (echo_server/presence.py), memory and Redis,
through one contract: members are sockets, ``here()`` lists users (loose ids,
newest first), joining and leaving are decided per user, atomically, also when
many joins and leaves overlap and when several instances share one Redis; every
write has a version that grows in the order the writes took effect, and a join
can be taken back unseen only while nothing else was written.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from echo_server.core.presence import Member, MemoryPresenceStore, PresenceStore, RedisPresenceStore

CHANNEL = "presence-room"
StoreFactory = Callable[[str], PresenceStore]


@pytest.fixture(params=["memory", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def prefix() -> str:
    return f"app{secrets.token_hex(3)}_database_"


@pytest.fixture
def make_store(kind: str, redis: aioredis.Redis, prefix: str) -> StoreFactory:
    """``make_store(instance_id)``: stores made with one factory share their members, as
    instances on one Redis do (the memory store is one instance: one shared object)."""
    memory = MemoryPresenceStore()

    def factory(instance_id: str) -> PresenceStore:
        if kind == "memory":
            return memory
        return RedisPresenceStore(redis, key_prefix=prefix, instance_id=instance_id)
    return factory


def _users(members: list[Member]) -> list[tuple[Any, Any]]:
    return [(m.user_id, m.user_info) for m in members]


async def test_users_not_sockets(make_store: StoreFactory) -> None:
    store = make_store("a")
    joined = await store.join(CHANNEL, "s1", Member(1, {"tab": 1}))
    assert joined.first_for_user and _users(joined.members) == [(1, {"tab": 1})]
    joined = await store.join(CHANNEL, "s2", Member(2, {"name": "Bob"}))
    assert joined.first_for_user
    assert _users(joined.members) == [(2, {"name": "Bob"}), (1, {"tab": 1})]
    # User 1's second tab, id as a string: the same user, listed once, as its newest tab.
    joined = await store.join(CHANNEL, "s3", Member("1", {"tab": 2}))
    assert not joined.first_for_user
    assert _users(joined.members) == [("1", {"tab": 2}), (2, {"name": "Bob"})]
    assert _users(await store.members(CHANNEL)) == _users(joined.members)

    left = await store.leave(CHANNEL, "s1")
    assert left.member is not None and left.member.user_id == 1 and not left.last_for_user
    left = await store.leave(CHANNEL, "s3")
    assert left.member is not None and left.member.user_id == "1" and left.last_for_user
    for channel, socket_id in ((CHANNEL, "s3"), (CHANNEL, "nobody"), ("presence-none", "s2")):
        left = await store.leave(channel, socket_id)
        assert left.member is None and not left.last_for_user
    assert _users(await store.members(CHANNEL)) == [(2, {"name": "Bob"})]


@pytest.mark.parametrize(("first", "second", "same"), [
    (1, "1", True), (1, 1.0, True), ("abc", "abc", True), (7, 8, False), ("a", "A", False),
    (1, "1.5", False),
])
async def test_loose_user_ids(make_store: StoreFactory, first: Any, second: Any,
                              same: bool) -> None:
    """JavaScript's ``==`` between ids, as the reference compares them."""
    store = make_store("a")
    await store.join(CHANNEL, "s1", Member(first, None))
    joined = await store.join(CHANNEL, "s2", Member(second, None))
    assert joined.first_for_user is not same
    assert len(joined.members) == (1 if same else 2)
    assert (await store.leave(CHANNEL, "s2")).last_for_user is not same


async def test_same_socket_joining_again_is_one_member(make_store: StoreFactory) -> None:
    """A re-subscribe of the same socket replaces its entry; it never counts as a
    second tab (so the user still leaves when this socket does), nor as a user joining."""
    store = make_store("a")
    joined = await store.join(CHANNEL, "s1", Member(1, {"v": 1}))
    assert joined.first_for_user and joined.added
    again = await store.join(CHANNEL, "s1", Member(1, {"v": 2}))
    assert not again.first_for_user and not again.added
    assert _users(again.members) == [(1, {"v": 2})]
    assert (await store.leave(CHANNEL, "s1")).last_for_user
    assert await store.members(CHANNEL) == []


async def test_versions_follow_the_writes(make_store: StoreFactory) -> None:
    """Joins and leaves, through two instances, get versions in the order they took effect;
    a leave that removes nothing has none."""
    stores = [make_store("a"), make_store("b")]
    versions = [(await stores[0].join(CHANNEL, "s1", Member(1, None))).version,
                (await stores[1].join(CHANNEL, "s2", Member(1, None))).version,
                (await stores[0].join("presence-other", "s1", Member(2, None))).version,
                (await stores[1].leave(CHANNEL, "s2")).version,
                (await stores[0].leave(CHANNEL, "s1")).version]
    assert versions == sorted(set(versions)) and versions[0] > 0
    assert (await stores[0].leave(CHANNEL, "s1")).version == 0


async def test_a_join_is_taken_back_unseen_only_while_nothing_else_was_written(
        make_store: StoreFactory) -> None:
    """A socket that went while its join was being written: when no presence write came after
    the join (on any channel, any instance), nobody can have counted that member, and it is
    taken back without a trace (no member to announce leaving). Once anything was written
    since, it leaves like any member."""
    store, other = make_store("a"), make_store("b")
    joined = await store.join(CHANNEL, "s1", Member(1, None))
    left = await store.leave(CHANNEL, "s1", unless_changed_since=joined.version)
    assert left.member is None and await store.members(CHANNEL) == []

    joined = await store.join(CHANNEL, "s1", Member(1, None))
    await other.join("presence-other", "s9", Member(9, None))
    left = await store.leave(CHANNEL, "s1", unless_changed_since=joined.version)
    assert left.member is not None and left.last_for_user and left.version > joined.version
    assert await store.members(CHANNEL) == []


async def test_overlapping_joins_and_leaves(make_store: StoreFactory) -> None:
    """The reference's GET-then-SET loses members when joins overlap. Here 100 users and
    20 tabs of one more user join at once through two instances, then all leave at once:
    every user is listed, exactly one tab of the many-tab user is its first and exactly
    one its last, and nothing is left behind."""
    stores = [make_store("a"), make_store("b")]
    sockets = [(f"s{n}", n) for n in range(100)] + [(f"t{n}", "many") for n in range(20)]

    def run(op: Callable[[PresenceStore, str, Any], Awaitable[Any]]) -> Awaitable[list[Any]]:
        return asyncio.gather(*(op(stores[i % 2], socket_id, user)
                                for i, (socket_id, user) in enumerate(sockets)))

    joins = await run(lambda store, sid, user: store.join(CHANNEL, sid, Member(user, None)))
    firsts = [j.first_for_user for j, (_, user) in zip(joins, sockets, strict=True)
              if user == "many"]
    assert firsts.count(True) == 1
    listed = [m.user_id for m in await stores[1].members(CHANNEL)]
    assert sorted(listed, key=str) == sorted([*range(100), "many"], key=str)

    leaves = await run(lambda store, sid, user: store.leave(CHANNEL, sid))
    lasts = [lv.last_for_user for lv, (_, user) in zip(leaves, sockets, strict=True)
             if user == "many"]
    assert lasts.count(True) == 1
    assert all(lv.last_for_user for lv, (_, user) in zip(leaves, sockets, strict=True)
               if user != "many")
    assert await stores[0].members(CHANNEL) == []


async def test_redis_layout(redis: aioredis.Redis, prefix: str) -> None:
    """One hash per channel, every key behind the keyPrefix's hash tag (one Cluster slot for
    the multi-key scripts); a socket id is only unique per instance, so two instances' sockets
    with the same id are two members; the key goes away with its last member."""
    a = RedisPresenceStore(redis, key_prefix=prefix, instance_id="a")
    b = RedisPresenceStore(redis, key_prefix=prefix, instance_id="b")
    await a.join(CHANNEL, "same-id", Member(1, {"on": "a"}))
    joined = await b.join(CHANNEL, "same-id", Member(2, {"on": "b"}))
    assert joined.first_for_user and joined.added and len(joined.members) == 2
    tag = "{" + prefix + "echo}"
    assert sorted([k async for k in redis.scan_iter(match="{" + prefix + "*")]) == [
        f"{tag}:presence-channels".encode(), f"{tag}:presence-clock".encode(),
        f"{tag}:presence:{CHANNEL}".encode()]
    left = await a.leave(CHANNEL, "same-id")
    assert left.member is not None and left.member.user_id == 1 and left.last_for_user
    assert _users(await b.members(CHANNEL)) == [(2, {"on": "b"})]
    await b.leave(CHANNEL, "same-id")
    # The clock of the versions stays: one key per keyPrefix.
    assert [k async for k in redis.scan_iter(match="{" + prefix + "*")] == [
        f"{tag}:presence-clock".encode()]


async def test_redis_versions_never_go_back(redis: aioredis.Redis, prefix: str) -> None:
    """The clock is Redis's time in microseconds, or one more than the last version when that
    is later: a clock ahead of time (a failover to a server whose time lags) still grows, and
    a clock lost with Redis's data starts again from the time, above every earlier version."""
    store = RedisPresenceStore(redis, key_prefix=prefix, instance_id="a")
    clock = "{" + prefix + "echo}:presence-clock"
    first = (await store.join(CHANNEL, "s1", Member(1, None))).version
    seconds, microseconds = await redis.time()
    assert abs(first - (seconds * 1_000_000 + microseconds)) < 5_000_000
    ahead = first + 3_600_000_000
    await redis.set(clock, str(ahead))
    assert (await store.join(CHANNEL, "s2", Member(2, None))).version == ahead + 1
    await redis.delete(clock)
    assert first < (await store.leave(CHANNEL, "s1")).version < ahead
