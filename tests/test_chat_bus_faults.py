"""The chat on Redis when Redis fails for real: killed mid-burst, paused (SIGSTOP), and a process that leaks nothing.

A paused Redis is the hard case: it accepts connections and never answers, so every await that talks to it
must have its own bound. Each test says what the chapter claims and produces it: nothing accepted is lost
from the Stream across a pause, a lost Redis is counted (not silent), a join or say gets a clear error in
bounded time, a stop never hangs, and ``wslab.stop_all()`` leaves no task, socket or member behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

import wslab
from wslab import faults, services
from wslab.chat.bus import RedisBus
from wslab.chat.client import ChatClient
from wslab.chat.cluster import ClusterChat

from .conftest import open_fds, require
from .test_chat_bus_hostile import eventually, prefix, redis_url  # noqa: F401 (a fixture)

TIMEOUT = 0.3  # seconds Redis gets to answer a command in these tests


@pytest.fixture
async def redis() -> AsyncIterator[services.RedisServer]:
    require(shutil.which("redis-server") is not None, "redis-server (Debian package redis-server)")
    server = await services.start_redis("fault-redis")
    yield server
    with contextlib.suppress(ProcessLookupError):
        os.kill(server.pid, signal.SIGCONT)  # never leave a stopped process behind
    await server.stop()


def paused(server: services.RedisServer) -> contextlib.AbstractContextManager[None]:
    """Redis stopped with SIGSTOP: it keeps its sockets and accepts connections, but answers nothing."""
    return faults.paused_process(server.pid)


LOGS: dict[str, list[str]] = {}  # what each test chat's bus logged, by chat name


async def two_chats(url: str, **bus: Any) -> tuple[list[ClusterChat], ChatClient, ChatClient]:
    """Two chats sharing ``url`` under a fresh prefix; ada on the first, bob on the second, both in lobby."""
    name = prefix()
    LOGS.clear()
    settings = {"ttl": 5.0, "timeout": TIMEOUT, **bus}
    chats = [ClusterChat(bus=RedisBus(url, prefix=name, log=LOGS.setdefault(f"fault-chat-{n}", []).append, **settings),
                         presence_delay=0.01, rate=1000, burst=1000) for n in range(2)]
    for n, chat in enumerate(chats):
        await chat.start(name=f"fault-chat-{n}")
    ada = await ChatClient.connect(chats[0].ws_uri, proxy=None, timeout=5)
    bob = await ChatClient.connect(chats[1].ws_uri, proxy=None, timeout=5)
    await ada.join("lobby", "ada")
    await bob.join("lobby", "bob")
    assert (await ada.recv())["changes"] == [{"event": "join", "nick": "bob"}]
    return chats, ada, bob


async def texts_until(client: ChatClient, last: str) -> tuple[list[str], list[str]]:
    """The texts of the messages ``client`` receives up to ``last``, and the error codes among them."""
    texts: list[str] = []
    errors: list[str] = []
    while not texts or texts[-1] != last:
        message = await client.recv()
        if message["type"] == "message":
            texts.append(message["text"])
        elif message["type"] == "error":
            errors.append(message["code"])
    return texts, errors


def bus(chat: ClusterChat) -> RedisBus:
    assert isinstance(chat.bus, RedisBus)
    return chat.bus


# -- a paused Redis -------------------------------------------------------------------------------


async def test_a_say_and_a_join_while_redis_is_paused_get_unavailable_in_bounded_time(redis: services.RedisServer) -> None:
    chats, ada, bob = await two_chats(redis.url)
    try:
        with paused(redis):
            started = time.monotonic()
            await ada.say("while paused")
            assert (await ada.recv())["code"] == "unavailable"
            async with ChatClient(chats[1].ws_uri, proxy=None, timeout=5) as carl:
                assert (await carl.join("lobby", "carl"))["code"] == "unavailable"
            assert time.monotonic() - started < 4 * TIMEOUT + 1.0  # not the 5 s x 11 tries of redis-py's defaults
        assert ada.ws.state.name == bob.ws.state.name == "OPEN"  # nobody was disconnected
        await eventually(lambda: all(bus(chat).available for chat in chats))
        await ada.say("after")
        assert (await texts_until(bob, "after"))[0][-1] == "after"
        assert bus(chats[0]).refused >= 1
    finally:
        for chat in chats:
            await chat.stop()


@pytest.mark.parametrize("fault", ["paused", "killed"])
async def test_stop_while_redis_is_gone_returns_in_bounded_time(redis: services.RedisServer, fault: str) -> None:
    chats, ada, bob = await two_chats(redis.url)
    with paused(redis) if fault == "paused" else contextlib.nullcontext():
        if fault == "killed":
            redis.kill()
        started = time.monotonic()
        for chat in chats:
            await chat.stop()
        elapsed = time.monotonic() - started
    assert elapsed < 2 * (4 * TIMEOUT + 1.0), elapsed  # (before: 10 s each with Redis paused)
    assert list(wslab.running()) == ["fault-redis"]  # the chats and their buses are gone


async def test_nothing_accepted_is_lost_from_the_stream_across_a_pause(redis: services.RedisServer) -> None:
    chats, ada, bob = await two_chats(redis.url)
    try:
        said = [f"m{n}" for n in range(20)]
        for text in said[:10]:
            await ada.say(text)
        with paused(redis):  # mid-burst: some are in the stream unread by bob's process, the rest wait or fail
            for text in said[10:]:
                await ada.say(text)
            await eventually(lambda: all(bus(chat).reconnects == 1 for chat in chats))  # each reader noticed
        await eventually(lambda: all(bus(chat).available for chat in chats))
        await ada.say("after")
        ada_got, ada_errors = await texts_until(ada, "after")
        bob_got, _ = await texts_until(bob, "after")
        assert bob_got == ada_got  # the same events in one order on both processes: none lost in between
        assert ada_got == [text for text in [*said, "after"] if text in ada_got]  # in the order said, once each
        # each message was delivered or refused (and counted), never both: the refused one that reached a
        # stopped Redis is dropped with the connection it timed out on
        assert len(ada_errors) == bus(chats[0]).refused >= 1 and set(said) - set(ada_got) == set(said[-len(ada_errors):])
        assert [bus(chat).trimmed for chat in chats] == [0, 0]  # refused ones got no number: no gap, nothing trimmed
        for log in LOGS.values():  # the loss is said, once per process
            assert [line.split(" (")[0] for line in log if line.startswith("redis")] == ["redis lost", "redis is back: claiming this process's members again"]
    finally:
        for chat in chats:
            await chat.stop()


async def test_a_leave_missed_while_redis_was_paused_is_done_when_it_answers(redis: services.RedisServer) -> None:
    chats, ada, bob = await two_chats(redis.url)
    try:
        with paused(redis):
            await eventually(lambda: not bus(chats[1]).available)  # bob's process knows Redis is lost
            await bob.close()  # its leave is refused at once: without a retry "bob" would stay taken for ever
            await eventually(lambda: not chats[1].local and not chats[1]._departures)
            assert bus(chats[1])._owed == {("lobby", "bob", "bob")}
        leave = await ada.recv()
        assert leave["changes"] == [{"event": "leave", "nick": "bob"}] and leave["count"] == 1
        async with ChatClient(chats[0].ws_uri, proxy=None) as other:
            assert (await other.join("lobby", "bob"))["type"] == "joined"  # the nickname is free again
        assert not bus(chats[1])._owed
    finally:
        for chat in chats:
            await chat.stop()


async def test_a_process_whose_heartbeat_lapsed_claims_its_members_again(redis: services.RedisServer) -> None:
    import redis.asyncio as aioredis

    chats, ada, bob = await two_chats(redis.url, ttl=0.6)
    living = bus(chats[0])
    raw = aioredis.from_url(redis.url)
    try:  # what a Redis paused for longer than the TTL does: a live process's heartbeat expires ...
        for _ in range(20):  # (its own beat, every ttl / 3, may come between the two: then try again)
            await raw.delete(f"{living.prefix}:node:{living.node}")
            if await bus(chats[1]).reap() == 1:  # ... and another process's reaper removes its members
                break
        else:
            raise AssertionError("the heartbeat always came back before the reaper")
        news: list[dict[str, str]] = []
        while {"event": "join", "nick": "ada"} not in news:
            news += (await bob.recv())["changes"]
        assert news == [{"event": "leave", "nick": "ada"}, {"event": "join", "nick": "ada"}]
        async with ChatClient(chats[1].ws_uri, proxy=None) as impostor:
            assert (await impostor.join("lobby", "ada"))["code"] == "nick-taken"  # hers again
        assert LOGS["fault-chat-0"] == ["heartbeat had expired: claiming this process's members again"]
    finally:
        await raw.aclose()
        for chat in chats:
            await chat.stop()


# -- a killed Redis ------------------------------------------------------------------------------


async def test_redis_killed_mid_burst_the_loss_is_counted_and_the_chat_resumes(redis: services.RedisServer) -> None:
    chats, ada, bob = await two_chats(redis.url)
    try:
        burst = [f"before {n}" for n in range(10)]
        for text in burst:
            await ada.say(text)
        bob_before, _ = await texts_until(bob, "before 4")
        redis.kill()  # mid-burst: the rest may or may not have reached Redis, which keeps nothing
        for n in range(10):
            await ada.say(f"during {n}")
        await eventually(lambda: not chats[0]._chains)  # each handled (refused) while Redis is dead
        await redis.restart()
        await eventually(lambda: all(bus(chat).available for chat in chats))
        await ada.say("after")
        ada_got, ada_errors = await texts_until(ada, "after")
        bob_got, _ = await texts_until(bob, "after")
        assert not [text for text in ada_got + bob_got if text.startswith("during")]  # refused, never sent later
        assert len(ada_errors) == bus(chats[0]).refused >= 10  # every refusal told and counted
        delivered = [text for text in bob_before + bob_got if text in burst]
        assert delivered == burst[: len(delivered)] and len(delivered) >= 5  # what Redis held, in order, no gap
        for chat in chats:
            assert bus(chat).reconnects == 1 and chat.server is not None  # counted once: no crash loop
        for log in LOGS.values():  # (a heartbeat may find its key gone with Redis too, and say so)
            assert [line.split(" (")[0] for line in log if line.startswith("redis")] == ["redis lost", "redis is back: claiming this process's members again"]
    finally:
        for chat in chats:
            await chat.stop()


# -- nothing left behind --------------------------------------------------------------------------

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts fds in /proc/self/fd")


async def members_and_beats(url: str, bus_prefix: str) -> tuple[dict[bytes, bytes], list[bytes]]:
    """What Redis still holds for ``bus_prefix``: lobby's members, and the heartbeat keys."""
    import redis.asyncio as aioredis

    raw = aioredis.from_url(url)
    try:
        members = await raw.hgetall(f"{bus_prefix}:room:lobby:members")
        beats = [key for key in await raw.keys(f"{bus_prefix}:node:*") if not key.endswith(b":wake")]
        return members, beats
    finally:
        await raw.aclose()


@linux_only
async def test_stop_all_stops_a_cluster_chats_bus_no_task_socket_or_member_left(redis_url: str) -> None:
    await asyncio.sleep(0)
    tasks_before, fds_before = asyncio.all_tasks(), open_fds()
    bus_prefix = prefix()
    chat = ClusterChat(bus=RedisBus(redis_url, prefix=bus_prefix, timeout=TIMEOUT, log=lambda line: None))
    await chat.start(name="leak-chat")
    async with ChatClient(chat.ws_uri, proxy=None) as ada:
        await ada.join("lobby", "ada")
        await ada.say("hi")
        assert (await ada.recv())["text"] == "hi"
        assert list(wslab.running()) == ["leak-chat bus", "leak-chat"]
        assert len(open_fds()) > len(fds_before) + 2  # the bus's connections, the server, ada
        assert await wslab.stop_all() == ["leak-chat bus", "leak-chat"]
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == tasks_before
    assert open_fds() == fds_before
    assert await members_and_beats(redis_url, bus_prefix) == ({}, [])  # ada released at once, not after the TTL


async def test_a_chat_started_again_under_its_name_replaces_its_bus_too(redis_url: str) -> None:
    first = ClusterChat(bus=RedisBus(redis_url, prefix=prefix(), timeout=TIMEOUT, log=lambda line: None))
    await first.start(name="again")
    tasks = list(first.bus._tasks)  # type: ignore[attr-defined]
    again = ClusterChat(bus=RedisBus(redis_url, prefix=prefix(), timeout=TIMEOUT, log=lambda line: None))
    await again.start(name="again")  # a notebook cell run twice
    try:
        assert list(wslab.running()) == ["again bus", "again"]
        assert len(tasks) == 3 and all(task.done() for task in tasks)  # the first bus stopped reading and beating
        assert wslab.running()["again"] == again.server.uri
    finally:
        await again.stop()


def test_at_interpreter_exit_the_bus_releases_its_members(redis_url: str) -> None:
    bus_prefix = prefix()
    script = textwrap.dedent(f"""
        import asyncio
        from wslab.chat.bus import RedisBus

        bus = RedisBus({redis_url!r}, prefix={bus_prefix!r})
        held = [("lobby", "ada", "ada")]

        async def main():
            await bus.start(lambda *event: None, lambda: held)
            assert await bus.join("lobby", "ada", "ada")

        asyncio.new_event_loop().run_until_complete(main())  # a kernel's loop: still there at exit
        print("exiting")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (0, "exiting\n", "")
    assert asyncio.run(members_and_beats(redis_url, bus_prefix)) == ({}, [])


async def test_a_process_paused_past_the_streams_length_says_how_many_messages_it_lost(redis: services.RedisServer) -> None:
    behind = await services.start_chat("behind", redis=redis.url, args=["--ttl", "5"])
    writer = ClusterChat(bus=RedisBus(redis.url, stream_length=10, timeout=TIMEOUT), rate=10_000, burst=10_000)
    await writer.start(name="writer")
    try:
        async with ChatClient(behind.uri, timeout=5) as bob, ChatClient(writer.ws_uri, timeout=5) as ada:
            await bob.join("lobby", "bob")
            await ada.join("lobby", "ada")
            with faults.paused_process(behind.pid):  # a long GC pause, a stopped VM: the stream moves on
                for n in range(400):
                    await ada.say(f"m{n}")
                while (message := await ada.recv()).get("text") != "m399":  # all 400 are in the stream
                    pass
            seqs = []
            while not seqs or seqs[-1] != message["seq"]:
                got = await bob.recv()
                if got["type"] == "message":
                    seqs.append(got["seq"])
        gaps = [(a + 1, b - 1) for a, b in zip([0, *seqs], seqs) if b != a + 1]  # what bob never got
        assert seqs == sorted(set(seqs)) and seqs[-1] == 400 and len(gaps) == 1  # in order, once each, one gap
        first, last = gaps[0]
        assert f"bus: room 'lobby': {last - first + 1} messages (seq {first} to {last}) were trimmed from its stream" in behind.log()
    finally:
        await writer.stop()
        await behind.stop()
