"""The chat server over real connections: rooms, presence, history, bad input, guards, faults, leaks."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

import wslab
from wslab import http_get
from wslab.chat import WS_PATH, ChatClient, ChatServer, encode

from .conftest import open_fds
from .test_chat_protocol import BAD

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts fds in /proc/self/fd")


@pytest.fixture
async def chat() -> AsyncIterator[ChatServer]:
    """A started chat server with the default settings (history 20, rate 10/s, burst 20)."""
    chat = ChatServer()
    server = await chat.start()
    yield chat
    await server.stop()


async def joined(uri: str, room: str, nick: str, **kwargs: Any) -> ChatClient:
    """A connected client that has joined ``room`` as ``nick``; close it with ``await c.ws.close()``."""
    client = await ChatClient.connect(uri, **kwargs)
    reply = await client.join(room, nick)
    assert reply["type"] == "joined", reply
    return client


async def news(client: ChatClient, n: int) -> list[dict[str, str]]:
    """The next ``n`` presence changes ``client`` hears of (the server sends them in batches)."""
    changes: list[dict[str, str]] = []
    while len(changes) < n:
        message = await client.recv()
        assert message["type"] == "presence", message
        changes += message["changes"]
    assert len(changes) == n, changes
    return changes


async def roundtrip_chat(sender: ChatClient, others: list[ChatClient], text: str) -> None:
    """``sender`` says ``text``; everyone, the sender included, receives it next."""
    await sender.say(text)
    for client in [sender, *others]:
        message = await client.recv()
        assert (message["type"], message["text"]) == ("message", text), message


# -- the happy path -----------------------------------------------------------------------------


async def test_hello_join_presence_and_messages(chat: ChatServer) -> None:
    async with ChatClient(chat.ws_uri) as ada, ChatClient(chat.ws_uri) as bob:
        assert ada.hello == {"v": 1, "type": "hello", "limits": {"nick": 24, "room": 32, "text": 500}, "history": 20, "auth": False, "heartbeat": 5}
        assert await ada.join("lobby", "ada") == {"v": 1, "type": "joined", "room": "lobby", "nick": "ada", "members": ["ada"], "history": []}
        assert (await bob.join("lobby", "bob"))["members"] == ["ada", "bob"]
        assert await ada.recv() == {"v": 1, "type": "presence", "room": "lobby", "changes": [{"event": "join", "nick": "bob"}], "count": 2}
        await bob.say("hi")
        expected = {"v": 1, "type": "message", "room": "lobby", "seq": 1, "nick": "bob", "text": "hi"}
        assert await ada.recv() == expected
        assert await bob.recv() == expected
        await bob.send(type="leave")
        assert await bob.recv() == {"v": 1, "type": "left", "room": "lobby"}
        assert await ada.recv() == {"v": 1, "type": "presence", "room": "lobby", "changes": [{"event": "leave", "nick": "bob"}], "count": 1}


async def test_history_on_join_is_the_last_n_messages() -> None:
    chat = ChatServer(history=3)
    async with await chat.start():
        ada = await joined(chat.ws_uri, "lobby", "ada")
        for n in range(5):
            await ada.say(f"m{n}")
            assert (await ada.recv())["seq"] == n + 1
        async with ChatClient(chat.ws_uri) as bob:
            reply = await bob.join("lobby", "bob")
            assert reply["history"] == [{"seq": s, "nick": "ada", "text": f"m{s - 1}"} for s in (3, 4, 5)]
        await ada.ws.close()


async def test_rooms_are_isolated_and_a_nick_is_unique_per_room_only(chat: ChatServer) -> None:
    ada = await joined(chat.ws_uri, "red", "ada")
    other_ada = await joined(chat.ws_uri, "blue", "ada")  # same nickname, another room: fine
    await roundtrip_chat(ada, [], "in red")
    await roundtrip_chat(other_ada, [], "in blue")  # red's message never reached blue, or this would fail
    async with ChatClient(chat.ws_uri) as bob:
        reply = await bob.join("red", "ada")
        assert reply["code"] == "nick-taken" and "pick another" in reply["error"]
        assert (await bob.join("red", "bob"))["history"] == [{"seq": 1, "nick": "ada", "text": "in red"}]
    for client in (ada, other_ada):
        await client.ws.close()


async def test_joining_another_room_leaves_the_first(chat: ChatServer) -> None:
    ada = await joined(chat.ws_uri, "red", "ada")
    bob = await joined(chat.ws_uri, "red", "bob")
    await ada.recv()  # bob joined
    assert (await bob.join("blue", "bob"))["room"] == "blue"
    assert (await ada.recv())["changes"] == [{"event": "leave", "nick": "bob"}]
    assert sorted(chat.rooms) == ["blue", "red"]
    for client in (ada, bob):
        await client.ws.close()


# -- bad input: the sender gets the documented error, nobody else notices ----------------------


MORE_BAD = {
    "say before join": (encode({"type": "say", "text": "hi"}), "not-joined", "join a room before you say"),
    "leave before join": (encode({"type": "leave"}), "not-joined", "join a room before you leave"),
}


@pytest.mark.parametrize(("data", "code", "words"), {**BAD, **MORE_BAD}.values(), ids=[*BAD, *MORE_BAD])
async def test_bad_message_gets_an_error_and_everyone_keeps_chatting(chat: ChatServer, data: str | bytes, code: str, words: str) -> None:
    ada = await joined(chat.ws_uri, "lobby", "ada")
    async with ChatClient(chat.ws_uri) as sender:
        await sender.ws.send(data)
        reply = await sender.recv()
        assert reply["type"] == "error" and reply["code"] == code and words in reply["error"], reply
        # the sender is still connected and can join and chat
        assert (await sender.join("lobby", "sender"))["type"] == "joined"
        assert (await ada.recv())["changes"] == [{"event": "join", "nick": "sender"}]
        await roundtrip_chat(sender, [ada], "still here")
        await roundtrip_chat(ada, [sender], "me too")
    await ada.ws.close()


async def test_bad_message_from_a_member_reaches_nobody_else(chat: ChatServer) -> None:
    ada = await joined(chat.ws_uri, "lobby", "ada")
    bob = await joined(chat.ws_uri, "lobby", "bob")
    await ada.recv()  # bob joined
    await bob.ws.send('{"v": 1, "type": "say", "text": 42}')
    assert (await bob.recv())["code"] == "bad-field"
    await roundtrip_chat(ada, [bob], "next")  # ada's next message is the first thing she receives
    for client in (ada, bob):
        await client.ws.close()


async def test_message_over_max_size_closes_with_1009_only_that_client() -> None:
    chat = ChatServer(max_size=1000)
    async with await chat.start():
        ada = await joined(chat.ws_uri, "lobby", "ada")
        async with ChatClient(chat.ws_uri) as big:
            await big.ws.send("x" * 1001)
            await big.ws.wait_closed()
            assert big.ws.close_code == 1009
        await roundtrip_chat(ada, [], "fine")
        await ada.ws.close()


# -- guards -----------------------------------------------------------------------------------


async def test_rate_limit_closes_with_1008_and_the_others_keep_chatting() -> None:
    chat = ChatServer(rate=1, burst=5)
    async with await chat.start():
        ada = await joined(chat.ws_uri, "lobby", "ada")
        flood = await joined(chat.ws_uri, "lobby", "flood")
        await ada.recv()  # flood joined
        with pytest.raises(ConnectionClosedError) as caught:
            for n in range(100):
                await flood.say(f"spam {n}")
                await flood.ws.recv()
        assert (caught.value.rcvd.code, caught.value.rcvd.reason) == (1008, "rate limit exceeded")
        while (message := await ada.recv())["type"] == "message":  # what flood said before the limit
            assert message["nick"] == "flood"
        assert message["changes"] == [{"event": "leave", "nick": "flood"}]
        await roundtrip_chat(ada, [], "quiet again")
        await ada.ws.close()


async def test_bad_origin_gets_403_same_origin_and_allow_list_and_none_are_accepted() -> None:
    chat = ChatServer(origins=["https://hub.example.org"])
    async with await chat.start() as server:
        with pytest.raises(InvalidStatus) as caught:
            await connect(chat.ws_uri, origin="https://evil.example")
        assert caught.value.response.status_code == 403
        assert b"Origin https://evil.example is not allowed" in caught.value.response.body
        for origin in (f"http://127.0.0.1:{server.port}", "https://hub.example.org", None):
            async with connect(chat.ws_uri, origin=origin) as ws:
                assert json.loads(await ws.recv())["type"] == "hello"


async def test_a_host_name_the_chat_does_not_serve_gets_421_page_included() -> None:
    chat = ChatServer(origins=["https://hub.example.org:8443"], hosts=["chat.example"])
    async with await chat.start() as server:
        with pytest.raises(InvalidStatus) as caught:  # DNS rebinding: evil.example now resolves to 127.0.0.1
            await connect(f"ws://evil.example:{server.port}/ws", host="127.0.0.1", port=server.port, origin=f"http://evil.example:{server.port}")
        assert caught.value.response.status_code == 421
        assert b"does not answer to Host 'evil.example'" in caught.value.response.body
        with pytest.raises(InvalidStatus) as caught:  # two Host headers
            await connect(chat.ws_uri, additional_headers={"Host": "evil.example"})
        assert caught.value.response.status_code == 421
        for name in ("localhost", "hub.example.org", "chat.example"):
            async with connect(f"ws://{name}:{server.port}/ws", host="127.0.0.1", port=server.port) as ws:
                assert json.loads(await ws.recv())["type"] == "hello"


async def test_the_page_has_a_csp_that_allows_its_own_script_and_nosniff(chat: ChatServer) -> None:
    page = await http_get(chat.http_url)
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy and "connect-src 'self'" in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"


async def test_token_by_first_message_is_the_default() -> None:
    chat = ChatServer(token="s3cret")
    async with await chat.start():
        async with ChatClient(chat.ws_uri) as ada:
            assert ada.hello["auth"] is True
            await ada.send(type="auth", token="s3cret")
            assert await ada.recv() == {"v": 1, "type": "authenticated"}
            assert (await ada.join("lobby", "ada"))["type"] == "joined"
        for first in ({"type": "auth", "token": "guess"}, {"type": "join", "room": "lobby", "nick": "eve"}):
            async with ChatClient(chat.ws_uri) as eve:
                await eve.send(**first)
                assert (await eve.recv())["code"] == "auth-failed"
                assert await eve.recv() == {"v": 1, "type": "closing", "code": 1008, "reason": "authentication failed"}
                await eve.ws.wait_closed()
                assert (eve.ws.close_code, eve.ws.close_reason) == (1008, "authentication failed")
        assert (await http_get(chat.http_url)).status == 200  # the page itself needs no token


async def test_token_in_the_query_string_is_the_taught_alternative() -> None:
    chat = ChatServer(token="s3cret", auth="query")
    async with await chat.start():
        for uri in (chat.ws_uri, chat.ws_uri + "?chat_token=wrong", chat.ws_uri + "?token=s3cret"):
            with pytest.raises(InvalidStatus) as caught:
                await connect(uri)
            assert caught.value.response.status_code == 401  # ?token= is Jupyter's name, not the chat's
        async with ChatClient(chat.ws_uri + "?chat_token=s3cret") as by_query:
            assert by_query.hello["auth"] is False
        async with ChatClient(chat.ws_uri, additional_headers={"Authorization": "Bearer s3cret"}) as by_header:
            assert by_header.hello["type"] == "hello"


async def test_http_page_health_and_404(chat: ChatServer) -> None:
    page = await http_get(chat.http_url)
    assert page.status == 200 and page.headers.get_all("Content-Type") == ["text/html; charset=utf-8"]
    assert 'id="messages"' in page.text
    health = await http_get(chat.http_url + "health")
    assert health.status == 200 and health.headers.get_all("Content-Type") == ["application/json"]
    assert json.loads(health.body) == {"status": "ok", "rooms": 0, "clients": 0}
    assert (await http_get(chat.http_url + "nope")).status == 404
    assert (await http_get(chat.ws_uri)).status == 426  # WebSocket path, no Upgrade header
    with pytest.raises(InvalidStatus) as caught:
        await connect(chat.ws_uri.replace(WS_PATH, "/elsewhere"))
    assert caught.value.response.status_code == 404
    assert chat.http_url == chat.ws_uri.replace("ws://", "http://").replace(WS_PATH, "/")


# -- faults -----------------------------------------------------------------------------------


async def test_a_client_that_vanishes_without_close_frame_leaves_and_the_rest_keep_chatting(chat: ChatServer) -> None:
    ada = await joined(chat.ws_uri, "lobby", "ada")
    bob = await joined(chat.ws_uri, "lobby", "bob")
    ghost = await joined(chat.ws_uri, "lobby", "ghost")
    assert await news(ada, 2) == [{"event": "join", "nick": "bob"}, {"event": "join", "nick": "ghost"}]
    assert await news(bob, 1) == [{"event": "join", "nick": "ghost"}]
    ghost.ws.transport.abort()  # gone: no close frame, TCP reset
    for client in (ada, bob):
        assert await client.recv() == {"v": 1, "type": "presence", "room": "lobby", "changes": [{"event": "leave", "nick": "ghost"}], "count": 2}
    await roundtrip_chat(ada, [bob], "still two of us")
    assert len(chat.clients) == 2
    assert chat.server is not None
    await chat.server.settle()
    assert [line for line in chat.server.transcript.lines if line.startswith("client 3: closed")] == ["client 3: closed 1006 (abnormal closure [internal])"]
    for client in (ada, bob):
        await client.ws.close()


async def stalled_socket(chat: ChatServer) -> socket.socket:
    """A connected socket with a tiny receive buffer: a client that stops reading fills it at once."""
    assert chat.server is not None
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (chat.server.host, chat.server.port))
    return sock


async def test_a_stalled_reader_is_disconnected_with_1008_and_loses_nothing_before() -> None:
    chat = ChatServer(max_buffer=20_000, slow_after=60, rate=10_000, burst=10_000, kick_timeout=0.5)

    async def small_buffers(connection: ServerConnection) -> None:
        # Kernel send buffers grow to megabytes on loopback; keep them small so the stall shows quickly.
        connection.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        await chat.handler(connection)

    chat.server = await wslab.start(small_buffers, name="chat", process_request=chat.process_request, write_limit=1024)
    async with chat.server:
        ada = await joined(chat.ws_uri, "lobby", "ada")
        bob = await joined(chat.ws_uri, "lobby", "bob")
        slow = await joined(chat.ws_uri, "lobby", "slow", max_queue=1, sock=await stalled_socket(chat))
        await news(ada, 2)
        await news(bob, 1)
        sent = 0
        while chat.kicked == 0:
            assert sent < 5000, "the stalled reader was never disconnected"
            sent += 1
            await ada.say(f"{sent} " + "x" * 400)
            for client in (ada, bob):
                message = await client.recv()
                assert message["seq"] == sent, message  # live clients get everything, in order
        for client in (ada, bob):
            assert (await client.recv())["changes"] == [{"event": "leave", "nick": "slow"}]
        await roundtrip_chat(bob, [ada], "slow is gone")
        # Now read what the stalled client got: a gap-free prefix, then the documented close.
        got = []
        with pytest.raises(ConnectionClosed):
            while True:
                got.append(json.loads(await slow.ws.recv()))
        seqs = [m["seq"] for m in got if m["type"] == "message"]
        assert seqs == list(range(1, len(seqs) + 1))
        assert slow.ws.close_code in (1008, 1006)  # 1008, or an abort if it could not take even the close frame
        if slow.ws.close_code == 1008:
            assert got[-1] == {"v": 1, "type": "closing", "code": 1008, "reason": "too slow: more than 19 KiB unsent"}
            assert slow.ws.close_reason == "too slow: more than 19 KiB unsent"
        for client in (ada, bob):
            await client.ws.close()


async def test_server_stopped_mid_stream_clients_see_1001(chat: ChatServer) -> None:
    ada = await joined(chat.ws_uri, "lobby", "ada")
    bob = await joined(chat.ws_uri, "lobby", "bob")
    await ada.recv()
    await ada.say("before stop")
    assert chat.server is not None
    await chat.server.stop()
    for client in (ada, bob):
        received = [json.loads(m) async for m in client.ws]  # ends quietly on 1001
        assert client.ws.close_code == 1001
        # the last word says why, for pages behind a proxy that turns 1001 into 1005
        assert received[-1] == {"v": 1, "type": "closing", "code": 1001, "reason": "server stopping"}
        assert [m["text"] for m in received if m["type"] == "message"] in ([], ["before stop"])
    assert chat.clients == set() and chat.rooms == {}


async def test_every_live_client_receives_every_message_in_order() -> None:
    chat = ChatServer(rate=10_000, burst=10_000)
    async with await chat.start():
        clients = [await joined(chat.ws_uri, "lobby", f"c{n}") for n in range(4)]
        for n, client in enumerate(clients):
            await news(client, len(clients) - 1 - n)  # the later joiners

        async def talk(client: ChatClient, name: str) -> None:
            for n in range(50):
                await client.say(f"{name}-{n}")

        await asyncio.gather(*(talk(c, f"c{n}") for n, c in enumerate(clients)))
        logs = [[await c.recv() for _ in range(200)] for c in clients]
        for log in logs:
            assert [m["seq"] for m in log] == list(range(1, 201))
            assert log == logs[0]
            for name in ("c0", "c1", "c2", "c3"):  # each sender's messages in the order sent
                assert [m["text"] for m in log if m["nick"] == name] == [f"{name}-{n}" for n in range(50)]
        for client in clients:
            await client.ws.close()


@linux_only
async def test_no_task_or_socket_left_after_faults_and_stop() -> None:
    await asyncio.sleep(0)
    tasks_before = asyncio.all_tasks()
    fds_before = open_fds()
    chat = ChatServer(rate=1, burst=3)
    server = await chat.start()
    try:
        ada = await joined(chat.ws_uri, "lobby", "ada")
        ghost = await joined(chat.ws_uri, "lobby", "ghost")
        ghost.ws.transport.abort()
        flood = await joined(chat.ws_uri, "lobby", "flood")
        for _ in range(10):
            await flood.say("spam")
        await flood.ws.wait_closed()
        assert flood.ws.close_code == 1008
        await ada.ws.send("{bad")
        assert len(open_fds()) > len(fds_before)
    finally:
        await server.stop()
    for client in (ada, ghost, flood):
        await client.ws.wait_closed()
    await asyncio.sleep(0)
    assert chat.clients == set() and chat.rooms == {}
    assert asyncio.all_tasks() == tasks_before
    assert open_fds() == fds_before


# -- presence, re-join, auth timeout ------------------------------------------------------------


async def test_a_crowd_joining_costs_each_member_a_few_presence_messages_not_one_per_joiner() -> None:
    chat = ChatServer(presence_delay=0.05)
    async with await chat.start():
        first = await joined(chat.ws_uri, "crowd", "first")
        crowd = await asyncio.gather(*(ChatClient.connect(chat.ws_uri, max_queue=None) for _ in range(200)))  # they never read again
        await asyncio.gather(*(c.send(type="join", room="crowd", nick=f"c{n}") for n, c in enumerate(crowd)))
        changes, messages = [], 0
        while len(changes) < 200:
            message = await first.recv()
            changes += message["changes"]
            messages += 1
        assert sorted(c["nick"] for c in changes) == sorted(f"c{n}" for n in range(200))  # each once
        assert {c["event"] for c in changes} == {"join"} and message["count"] == 201
        assert messages < 40  # with the whole member list at every join this was 200 messages, 20,000 names
        replies = [await c.recv() for c in crowd]
        assert all(r["type"] == "joined" for r in replies)
        assert max(len(r["members"]) for r in replies) == 201
        for client in [first, *crowd]:
            await client.close()


async def test_the_only_member_who_joins_again_keeps_the_history(chat: ChatServer) -> None:
    ada = await joined(chat.ws_uri, "lobby", "ada")
    await roundtrip_chat(ada, [], "remember me")
    reply = await ada.join("lobby", "ada2")  # a new nick, the same room
    assert reply["history"] == [{"seq": 1, "nick": "ada", "text": "remember me"}]
    await ada.say("and me")
    assert (await ada.recv())["seq"] == 2
    await ada.close()


async def test_no_auth_message_in_time_closes_with_1008_and_says_why() -> None:
    chat = ChatServer(token="s3cret", auth_timeout=0.2)
    async with await chat.start():
        async with ChatClient(chat.ws_uri) as slow:
            assert await slow.recv() == {"v": 1, "type": "closing", "code": 1008, "reason": "authentication timeout"}
            await slow.ws.wait_closed()
            assert (slow.ws.close_code, slow.ws.close_reason) == (1008, "authentication timeout")
