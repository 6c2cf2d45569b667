"""The chat behind a bus: the same behaviour with rooms in this process and with rooms shared over Redis."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest

import wslab
from wslab import services
from wslab.chat.bus import LocalBus, RedisBus
from wslab.chat.client import ChatClient
from wslab.chat.cluster import ClusterChat

from .conftest import echo, require


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    require(shutil.which("redis-server") is not None, "redis-server (Debian package redis-server)")
    server = await services.start_redis("test-redis")
    yield server.url
    await server.stop()


@pytest.fixture(params=["local", "redis"])
async def uris(request: pytest.FixtureRequest) -> AsyncIterator[list[str]]:
    """Two places to connect: one chat twice (local bus), or two chats sharing one Redis."""
    redis = None
    if request.param == "local":
        chats = [ClusterChat(bus=LocalBus())]
    else:
        require(shutil.which("redis-server") is not None, "redis-server (Debian package redis-server)")
        redis = await services.start_redis("test-redis")
        chats = [ClusterChat(bus=RedisBus(redis.url, ttl=1.0)) for _ in range(2)]
    for number, chat in enumerate(chats):
        await chat.start(name=f"bus-chat-{number}")
    yield [chats[0].ws_uri, chats[-1].ws_uri]
    for chat in chats:
        await chat.stop()
    if redis is not None:
        await redis.stop()


async def test_members_on_either_side_chat_in_one_order(uris: list[str]) -> None:
    async with ChatClient(uris[0], proxy=None) as ada, ChatClient(uris[1], proxy=None) as bob:
        assert (await ada.join("lobby", "ada"))["members"] == ["ada"]
        joined = await bob.join("lobby", "bob")
        assert joined["members"] == ["ada", "bob"] and joined["history"] == []
        assert (await ada.recv())["changes"] == [{"event": "join", "nick": "bob"}]
        for n in range(5):
            await ada.say(f"a{n}")
            await bob.say(f"b{n}")
        for reader in (ada, bob):
            got = [await reader.recv() for _ in range(10)]
            assert [m["seq"] for m in got] == list(range(1, 11))  # one order, no gap, for everyone
            assert [m["text"] for m in got if m["nick"] == "ada"] == [f"a{n}" for n in range(5)]


async def test_nicknames_are_unique_across_processes_and_history_is_shared(uris: list[str]) -> None:
    async with ChatClient(uris[0], proxy=None) as ada, ChatClient(uris[1], proxy=None) as other:
        await ada.join("lobby", "ada")
        await ada.say("first")
        await ada.recv()
        taken = await other.join("lobby", "ADA")
        assert taken["code"] == "nick-taken"
        joined = await other.join("lobby", "eve")
        assert joined["history"] == [{"seq": 1, "nick": "ada", "text": "first"}]


async def test_a_leaving_member_is_announced_and_an_empty_room_forgets(uris: list[str]) -> None:
    async with ChatClient(uris[0], proxy=None) as ada:
        await ada.join("r", "ada")
        async with ChatClient(uris[1], proxy=None) as bob:
            await bob.join("r", "bob")
            await ada.recv()
            await bob.send(type="leave")
            assert (await bob.recv()) == {"v": 1, "type": "left", "room": "r"}
        assert (await ada.recv())["changes"] == [{"event": "leave", "nick": "bob"}]
        await ada.say("alone")
        await ada.recv()
        await ada.send(type="leave")
        await ada.recv()
        assert (await ada.join("r", "ada"))["history"] == []


async def test_a_dead_processs_members_are_removed_by_the_heartbeat_ttl(redis_url: str) -> None:
    living, dead = RedisBus(redis_url, ttl=0.6), RedisBus(redis_url, ttl=0.6)
    chat = ClusterChat(bus=living)
    await chat.start(name="bus-living")
    await dead.start(lambda room, event_id, event: None)
    try:
        async with ChatClient(chat.ws_uri, proxy=None) as ada:
            await ada.join("r", "ada")
            assert await dead.join("r", "ghost", "ghost")
            await ada.recv()
            for task in dead._tasks:  # the process stops beating, as after kill -9
                task.cancel()
            leave = await ada.recv()  # within 1.5 x ttl (the client's timeout is 2 s)
            assert leave["changes"] == [{"event": "leave", "nick": "ghost"}] and leave["count"] == 1
            assert living.reaped == 1
    finally:
        await chat.stop()
        await dead.close()


async def test_behind_a_trusted_proxy_the_cap_counts_the_forwarded_address() -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    chat = ClusterChat(trusted_proxies=("127.0.0.1",), max_per_ip=1)
    await chat.start(name="bus-capped")
    try:
        def via(address: str) -> connect:
            return connect(chat.ws_uri, proxy=None, additional_headers={"X-Forwarded-For": f"198.51.100.7, {address}"})

        async with via("203.0.113.9") as first:
            await first.recv()
            with pytest.raises(InvalidStatus) as refused:
                async with via("203.0.113.9"):
                    pass
            assert refused.value.response.status_code == 503
            async with via("203.0.113.10") as other:  # another client behind the same proxy
                await other.recv()
        assert [line for line in chat.server.transcript.lines if "connection from" in line][-2:] == [
            "client 1: connection from 203.0.113.9", "client 2: connection from 203.0.113.10"]
    finally:
        await chat.stop()


async def test_a_member_renamed_in_its_room_keeps_the_history_and_never_hears_of_itself(uris: list[str]) -> None:
    async with ChatClient(uris[0], proxy=None) as ada, ChatClient(uris[1], proxy=None) as bob:
        await ada.join("lobby", "ada")
        await ada.say("before")
        assert (await ada.recv())["text"] == "before"
        await bob.join("lobby", "bob")
        assert (await ada.recv())["changes"] == [{"event": "join", "nick": "bob"}]
        renamed = await ada.join("lobby", "ada2")
        assert (renamed["members"], [m["text"] for m in renamed["history"]]) == (["ada2", "bob"], ["before"])
        news: list[dict[str, str]] = []
        while len(news) < 2:
            news += (await bob.recv())["changes"]
        assert news == [{"event": "join", "nick": "ada2"}, {"event": "leave", "nick": "ada"}]
        await bob.say("after")
        assert (await ada.recv())["text"] == "after"  # the next thing ada hears: nothing about herself
        assert (await ada.join("lobby", "bob"))["code"] == "nick-taken"
        async with ChatClient(uris[0], proxy=None) as eve:
            assert (await eve.join("lobby", "ada"))["members"] == ["ada", "ada2", "bob"]  # the old name is free


async def test_a_bug_while_handling_one_message_closes_that_client_only_with_1011() -> None:
    class Buggy(LocalBus):
        async def say(self, room: str, nick: str, text: str) -> None:
            if text == "boom":
                raise RuntimeError("a bug \u202e in the bus")
            await super().say(room, nick, text)

    chat = ClusterChat(bus=Buggy())
    await chat.start(name="bus-buggy")
    try:
        async with ChatClient(chat.ws_uri, proxy=None) as ada, ChatClient(chat.ws_uri, proxy=None) as bob:
            await ada.join("lobby", "ada")
            await bob.join("lobby", "bob")
            assert (await ada.recv())["changes"] == [{"event": "join", "nick": "bob"}]
            await bob.say("boom")
            assert await bob.recv() == {"v": 1, "type": "closing", "code": 1011, "reason": "internal error"}
            await bob.ws.wait_closed()
            assert bob.ws.close_code == 1011
            assert (await ada.recv())["changes"] == [{"event": "leave", "nick": "bob"}]
            await ada.say("still here")
            assert (await ada.recv())["text"] == "still here"
        assert "client 2: error internal: RuntimeError: a bug \\u202e in the bus" in chat.server.transcript.lines
    finally:
        await chat.stop()


async def test_a_bus_refuses_a_name_another_kind_holds(redis_url: str) -> None:
    from wslab.servers import NameTakenError

    server = await wslab.start(echo, name="lobby bus")
    try:
        bus = RedisBus(redis_url)
        bus.name = "lobby bus"
        with pytest.raises(NameTakenError, match="'lobby bus' is taken by a WebSocket server"):
            await bus.start(lambda room, event_id, event: None)
        assert wslab.running()["lobby bus"] == server.uri  # the server was not stopped
        await bus.close()
    finally:
        await server.stop()
