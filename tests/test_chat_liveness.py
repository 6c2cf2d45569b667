"""Is the other side still there? A silent peer timed out of its room, and the page's ping/pong heartbeat."""

from __future__ import annotations

import time
from typing import Any

import pytest

from wslab import faults
from wslab.chat import ChatClient, ChatServer, encode

PING = encode({"type": "ping"})


async def next_of(client: ChatClient, kind: str) -> dict[str, Any]:
    """The next message of type ``kind`` (presence news in between is skipped)."""
    while (message := await client.recv())["type"] != kind:
        assert message["type"] == "presence", message
    return message


@pytest.mark.parametrize(("interval", "timeout"), [(0.5, 0.5), (0.3, 0.8)])
async def test_a_silent_member_leaves_after_ping_interval_plus_ping_timeout_plus_close_timeout(interval: float, timeout: float) -> None:
    """What chapter 05 says: a peer that vanished without even a reset stays interval + timeout + close_timeout
    (the chat's close_timeout is its kick_timeout, 1 s), not websockets' 10 s close_timeout on top."""
    chat = ChatServer(presence_delay=0.01)
    server = await chat.start(ping_interval=interval, ping_timeout=timeout)
    expected = interval + timeout + chat.kick_timeout
    async with ChatClient(chat.ws_uri, timeout=expected + 5) as ada:
        await ada.join("lobby", "ada")
        async with faults.stalled_client(chat.ws_uri) as ghost:  # joins, then never reads (so never answers a ping)
            ghost.send_text(encode({"type": "join", "room": "lobby", "nick": "ghost"}))
            news = await next_of(ada, "presence")
            assert news["changes"] == [{"event": "join", "nick": "ghost"}]
            joined = time.monotonic()
            news = await next_of(ada, "presence")
            gone = time.monotonic() - joined
            assert news["changes"] == [{"event": "leave", "nick": "ghost"}]
    await server.stop()
    assert expected - 0.3 < gone < expected + 2.0, f"the ghost stayed {gone:.1f} s; expected about {expected:.1f} s"
    assert "client 2: closed by the server with 1011 (internal error) keepalive ping timeout; no close frame received" in server.transcript.lines


async def test_a_close_timeout_passed_to_start_wins() -> None:
    chat = ChatServer()
    server = await chat.start(close_timeout=3)
    try:
        async with ChatClient(chat.ws_uri) as ada:
            await ada.join("lobby", "ada")
            assert next(iter(chat.clients)).connection.close_timeout == 3
    finally:
        await server.stop()


async def test_a_ping_gets_a_pong_to_the_sender_only_before_and_after_a_join() -> None:
    chat = ChatServer()
    server = await chat.start()
    try:
        async with ChatClient(chat.ws_uri) as ada, ChatClient(chat.ws_uri) as bob:
            assert ada.hello["heartbeat"] == 5
            await ada.ws.send(PING)
            assert await ada.recv() == {"v": 1, "type": "pong"}
            await ada.join("lobby", "ada")
            await bob.join("lobby", "bob")
            await ada.ws.send(PING)
            assert await next_of(ada, "pong") == {"v": 1, "type": "pong"}
            await ada.say("still here")
            assert (await next_of(bob, "message"))["text"] == "still here"  # bob saw no pong before it
            assert chat.rooms["lobby"].names == ["ada", "bob"]  # a ping is no leave, nor anything else
    finally:
        await server.stop()


async def test_pings_have_their_own_limit_and_never_cost_a_message() -> None:
    chat = ChatServer(rate=1, burst=3)
    server = await chat.start()
    try:
        async with ChatClient(chat.ws_uri) as ada:
            await ada.join("lobby", "ada")
            for text in ("one", "two"):  # with the join: the whole message burst
                await ada.say(text)
                await ada.ws.send(PING)
            for _ in range(3):
                await ada.ws.send(PING)  # five pings in all: the ping burst
            got = [(await ada.recv())["type"] for _ in range(7)]
            assert got == ["message", "pong", "message", "pong", "pong", "pong", "pong"]
            for _ in range(20):  # pings as a flood: that is a rate limit too
                await ada.ws.send(PING)
            while (message := await ada.recv())["type"] == "pong":
                pass
            assert message == {"v": 1, "type": "closing", "code": 1008, "reason": "rate limit exceeded"}
    finally:
        await server.stop()


async def test_before_authentication_a_ping_is_no_auth_message() -> None:
    chat = ChatServer(token="s3cret")
    server = await chat.start()
    try:
        async with ChatClient(chat.ws_uri) as ada:
            await ada.ws.send(PING)
            assert (await ada.recv())["code"] == "auth-failed"
    finally:
        await server.stop()


async def test_the_cluster_chat_answers_pings_and_keeps_the_member() -> None:
    from wslab.chat.cluster import ClusterChat

    chat = ClusterChat()
    server = await chat.start(name="cluster")
    try:
        async with ChatClient(chat.ws_uri) as ada:
            await ada.join("lobby", "ada")
            await ada.ws.send(PING)
            assert await next_of(ada, "pong") == {"v": 1, "type": "pong"}
            await ada.say("still in")
            assert (await next_of(ada, "message"))["text"] == "still in"
    finally:
        await server.stop()


def test_a_heartbeat_under_a_second_is_refused() -> None:
    with pytest.raises(ValueError, match="heartbeat must be at least 1 s"):
        ChatServer(heartbeat=0.5)
