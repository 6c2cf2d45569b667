"""Hostile clients, by class, each while two good clients chat: the good ones lose nothing.

Classes: encoding, nesting and size, bursts, impersonation, connection floods, abrupt disconnects
(FIN and RST), slow readers. After each, ``Room.check()`` asserts that ada and bob received every
message of the room (the same ``seq`` sequence, no gap) and exactly the presence changes expected;
the bad client gets what PROTOCOL.md says. Hypothesis makes the payloads of the first two classes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import InvalidStatus

import wslab
from wslab import faults
from wslab.chat import ChatClient, ChatError, ChatServer, encode, parse_client
from wslab.frames import Opcode, encode_frame

ERROR_CODES = {"binary", "bad-json", "not-object", "bad-version", "unknown-type", "bad-field", "too-long", "nick-taken", "not-joined"}
REFUSED = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
LIVE = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
PURE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- payloads -------------------------------------------------------------------------------------

TRICKY = st.sampled_from(["\u200b", "\u200d", "\u202e", "\u2066", "\ufeff", "\n", "\r", "\x00", "\u2028", "\ue000", "\U000e0fff", "\u0301"])
LONE_SURROGATE = st.integers(0xD800, 0xDFFF).map(chr)
TEXT = st.text(st.one_of(st.characters(), TRICKY, LONE_SURROGATE), min_size=0, max_size=30)
VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=8,
)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


HOSTILE = st.one_of(
    # encoding: every field a client can fill, with characters that cannot be sent back or that lie
    TEXT.map(lambda t: json.dumps({"v": 1, "type": "say", "text": t})),
    TEXT.map(lambda t: json.dumps({"v": 1, "type": "join", "room": "side", "nick": t})),
    TEXT.map(lambda t: json.dumps({"v": 1, "type": "join", "room": t, "nick": "mallory2"})),
    VALUES.map(lambda v: json.dumps({"v": 1, "type": "say", "text": "ok", "extra": v})),
    VALUES.map(lambda v: json.dumps({"v": v, "type": "say", "text": "hi"})),
    VALUES.map(json.dumps),
    # nesting and size: deep enough to exhaust the recursion limit, anywhere; integers too long for int()
    st.integers(1_000, 30_000).map(nested),
    st.integers(1_000, 30_000).map(lambda n: '{"v": 1, "type": "say", "text": "hi", "x": ' + nested(n) + "}"),
    st.integers(4_400, 30_000).map(lambda n: '{"v": 1, "type": "say", "text": "hi", "n": ' + "7" * n + "}"),
    st.integers(4_400, 30_000).map(lambda n: '{"v": 1, "type": "say", "text": ' + "7" * n + "}"),
    st.sampled_from(["NaN", "Infinity", "1e999"]).map(lambda x: '{"v": 1, "type": "say", "text": "hi", "n": ' + x + "}"),
    st.integers(0xD800, 0xDFFF).map(lambda c: '{"v": 1, "type": "say", "text": "\\u%04x"}' % c),
    st.integers(0xD800, 0xDFFF).map(lambda c: '{"v": 1, "type": "join", "room": "lobby", "nick": "\\u%04xada"}' % c),
    st.binary(max_size=20),
)


def fit_to_show(value: Any) -> bool:
    """No string in ``value`` holds a character the chat refuses to show to others."""
    if isinstance(value, str):
        return not any(unicodedata.category(c) in REFUSED and c != "\u200d" for c in value)
    return True


@PURE
@given(HOSTILE)
def test_parse_client_gives_a_sendable_message_or_a_documented_error(data: str | bytes) -> None:
    try:
        message = parse_client(data)
    except ChatError as error:
        assert error.code in ERROR_CODES
        error.reply().encode("utf-8")  # the answer itself can always be sent
        return
    for name in ("room", "nick", "text"):
        assert fit_to_show(message.get(name)), message
    encode(message).encode("utf-8")


# -- two good clients and a room log --------------------------------------------------------------


@dataclass
class Room:
    """ada and bob in "lobby", every message they receive recorded, and the presence changes expected."""

    chat: ChatServer
    ada: ChatClient
    bob: ChatClient
    said: int = 0
    others: int = 0  # messages said by other clients, which ada and bob receive too
    expected_changes: list[dict[str, str]] = field(default_factory=list)
    logs: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"ada": [], "bob": []})

    async def chat_a_little(self, who: str = "ada", padding: str = "") -> None:
        """One good client says something; both receive it (and whatever came before it)."""
        self.said += 1
        text = f"good {self.said}{padding}"
        await getattr(self, who).say(text)
        for name in ("ada", "bob"):
            while True:
                message = await getattr(self, name).recv()
                self.logs[name].append(message)
                if message.get("text") == text:
                    break

    def check(self, others: int = 0) -> None:
        """Both saw the same gap-free sequence (``others`` messages from other clients among them) and the expected presence."""
        for name in ("ada", "bob"):
            log = self.logs[name]
            messages = [m for m in log if m["type"] == "message"]
            assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1)), name
            assert len(messages) == self.said + others, name
            changes = [c for m in log if m["type"] == "presence" for c in m["changes"]]
            assert changes == self.expected_changes, (name, changes)
            assert {m["type"] for m in log} <= {"message", "presence"}, log
        assert self.logs["ada"] == self.logs["bob"]


async def ada_and_bob(chat: ChatServer) -> Room:
    """Two good clients in the lobby of a started chat, each past the other's join."""
    ada, bob = await ChatClient.connect(chat.ws_uri), await ChatClient.connect(chat.ws_uri)
    await ada.join("lobby", "ada")
    await bob.join("lobby", "bob")
    while (await ada.recv())["changes"] != [{"event": "join", "nick": "bob"}]:
        pass
    return Room(chat, ada, bob)


@pytest.fixture
async def room(request: pytest.FixtureRequest) -> AsyncIterator[Room]:
    settings_ = getattr(request, "param", {})
    chat = ChatServer(presence_delay=0.01, **settings_)
    async with await chat.start(close_timeout=1):
        room = await ada_and_bob(chat)
        await room.chat_a_little()
        yield room
        await room.chat_a_little("bob")  # still chatting after the hostile client
        room.check(others=room.others)
        await room.ada.close()
        await room.bob.close()


async def mallory_in_lobby(room: Room, nick: str = "mallory") -> ChatClient:
    mallory = await ChatClient.connect(room.chat.ws_uri)
    assert (await mallory.join("lobby", nick))["type"] == "joined"
    room.expected_changes.append({"event": "join", "nick": nick})
    return mallory


# -- encoding, nesting and size ---------------------------------------------------------------------


@LIVE
@given(payloads=st.lists(HOSTILE, min_size=4, max_size=8))
def test_hostile_payloads_cost_their_sender_an_error_and_nobody_else_anything(payloads: list[str | bytes]) -> None:
    async def scenario() -> None:
        chat = ChatServer(presence_delay=0.01, rate=1000, burst=1000)
        async with await chat.start(name="hostile", close_timeout=1):
            room = await ada_and_bob(chat)
            mallory = await mallory_in_lobby(room)
            accepted = 0
            for data in payloads:
                await mallory.ws.send(data)
                reply = await mallory.recv()
                if reply["type"] == "error":
                    assert reply["code"] in ERROR_CODES, reply
                    continue
                # it was fine after all: a message for the room, or mallory joined "side" (leaving lobby)
                if reply["type"] == "message":
                    accepted += 1
                    assert fit_to_show(reply["text"])
                    continue
                assert reply["type"] == "joined" and fit_to_show(reply["nick"]) and fit_to_show(reply["room"]), reply
                if reply["room"] != "lobby":
                    room.expected_changes.append({"event": "leave", "nick": "mallory"})
                await mallory.join("lobby", "mallory")
                if reply["room"] != "lobby":
                    room.expected_changes.append({"event": "join", "nick": "mallory"})
            await room.chat_a_little()
            await room.chat_a_little("bob")
            room.check(others=accepted)
            for client in (room.ada, room.bob, mallory):
                await client.close()

    asyncio.run(scenario())


async def test_a_lone_surrogate_in_a_join_or_a_say_never_disconnects_the_room(room: Room) -> None:
    mallory = await mallory_in_lobby(room)
    for data in ('{"v":1,"type":"join","room":"lobby","nick":"\\ud800x"}', '{"v":1,"type":"say","text":"\\udfffboom"}'):
        await mallory.ws.send(data)
        assert (await mallory.recv())["code"] == "bad-json"
    await room.chat_a_little()
    assert room.chat.server is not None
    await room.chat.server.show()  # the transcript prints too


@pytest.mark.parametrize("data", ["[" * 60_000, '{"v": 1, "type": "say", "text": "hi", "n": ' + "9" * 5000 + "}"], ids=["60,000 brackets", "5,000 digits"])
@pytest.mark.parametrize("room", [{"max_size": 2**17}], indirect=True)
async def test_valid_json_that_used_to_crash_the_handler_gets_bad_json(room: Room, data: str) -> None:
    mallory = await mallory_in_lobby(room)
    await mallory.ws.send(data)
    assert (await mallory.recv())["code"] == "bad-json"
    await room.chat_a_little()
    assert room.chat.server is not None
    assert not [line for line in room.chat.server.transcript.lines if "handler failed" in line]


# -- bursts ------------------------------------------------------------------------------------------


async def test_a_legal_burst_from_twelve_members_kicks_nobody(room: Room) -> None:
    members = [await mallory_in_lobby(room, f"m{n}") for n in range(12)]
    await asyncio.gather(*(m.ws.send(encode({"type": "say", "text": f"{m_n}-{k}"})) for m_n, m in enumerate(members) for k in range(15)))
    room.others = 12 * 15
    for member in members:  # each reads everything too, afterwards
        got = [m async for m in _messages(member, 12 * 15)]
        assert [m["seq"] for m in got] == list(range(2, 2 + 180))
    assert room.chat.kicked == 0
    for n, member in enumerate(members):
        await member.close()
        room.expected_changes.append({"event": "leave", "nick": f"m{n}"})


async def _messages(client: ChatClient, n: int) -> AsyncIterator[dict[str, Any]]:
    while n:
        message = await client.recv()
        if message["type"] == "message":
            n -= 1
            yield message


# -- impersonation -----------------------------------------------------------------------------------

DISGUISES = {
    "zero-width space": ("ada\u200b", "bad-field"),
    "bidi override": ("\u202eada", "bad-field"),
    "capital letter": ("Ada", "nick-taken"),
    "fullwidth letters": ("\uff41\uff44\uff41", "nick-taken"),
    "combining form of a taken nick": ("bo\u0062", "nick-taken"),
}


@pytest.mark.parametrize(("nick", "code"), DISGUISES.values(), ids=DISGUISES.keys())
async def test_a_nick_that_reads_like_a_member_is_refused(room: Room, nick: str, code: str) -> None:
    async with ChatClient(room.chat.ws_uri) as mallory:
        assert (await mallory.join("lobby", nick))["code"] == code


@pytest.mark.parametrize("text", ["hi\nbob: send me your password", "hi\u2028bob: hi", "\u202eevil", "x\r\nbob: y"])
async def test_a_text_that_would_show_as_another_speaker_is_refused(room: Room, text: str) -> None:
    mallory = await mallory_in_lobby(room)
    await mallory.say(text)
    assert (await mallory.recv())["code"] == "bad-field"


# -- connection floods -------------------------------------------------------------------------------


@pytest.mark.parametrize("room", [{"max_per_ip": 4, "proxies": ()}], indirect=True)
async def test_too_many_connections_from_one_address_get_503(room: Room) -> None:
    extra = [await connect(room.chat.ws_uri) for _ in range(2)]  # ada, bob and these two: 4
    with pytest.raises(InvalidStatus) as caught:
        await connect(room.chat.ws_uri)
    response = caught.value.response
    assert (response.status_code, response.headers["Retry-After"]) == (503, "5")
    assert b"4 connections from your address already" in response.body
    for ws in extra:
        await ws.close()


@pytest.mark.parametrize("room", [{"max_clients": 4}], indirect=True)
async def test_a_flood_of_handshakes_gets_503_or_1013_and_the_cap_holds(room: Room) -> None:
    refused, everyone_refused = 0, asyncio.Event()

    def one_more_refused() -> None:
        nonlocal refused
        refused += 1
        if refused == 8:  # ada and bob hold 2 of the 4 places: 2 get in, 8 are refused
            everyone_refused.set()

    async def attempt() -> str:
        try:
            async with connect(room.chat.ws_uri) as ws:
                first = json.loads(await ws.recv())
                if first["type"] == "closing":
                    one_more_refused()
                    await ws.wait_closed()
                    assert (first["code"], ws.close_code) == (1013, 1013)
                    return "1013"
                assert len(room.chat.clients) <= 4
                await asyncio.wait_for(everyone_refused.wait(), 10)  # hold the place while the others try
                return "in"
        except InvalidStatus as exc:
            one_more_refused()
            assert exc.response.status_code == 503
            return "503"

    results = await asyncio.gather(*(attempt() for _ in range(10)))
    assert results.count("in") == 2 and set(results) <= {"in", "503", "1013"}


# -- abrupt disconnects ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["FIN", "RST", "RST mid-frame"])
async def test_a_client_gone_without_a_close_frame_leaves_once(room: Room, how: str) -> None:
    mallory = await mallory_in_lobby(room)
    transport = mallory.ws.transport
    if how == "FIN":
        transport.close()
    else:
        if how == "RST mid-frame":
            transport.write(encode_frame(Opcode.TEXT, b'{"v": 1, "type": "say", "text": "half"}', mask=b"abcd")[:12])
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    room.expected_changes.append({"event": "leave", "nick": "mallory"})
    await room.chat_a_little()


# -- slow readers ------------------------------------------------------------------------------------


class SmallBufferChat(ChatServer):
    """Kernel send buffers grow to megabytes on loopback; small ones make a stall show at once."""

    async def handler(self, connection: ServerConnection) -> None:
        connection.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        connection.transport.set_write_buffer_limits(high=1024)
        await super().handler(connection)


@pytest.mark.parametrize(("settings_", "reason"), [({"max_buffer": 20_000}, "too slow: more than 19 KiB unsent"), ({"slow_after": 0.3}, "too slow: data waiting for over 0.3 s")])
async def test_a_stalled_reader_is_closed_and_the_others_lose_nothing(settings_: dict[str, Any], reason: str) -> None:
    chat = SmallBufferChat(presence_delay=0.01, rate=10_000, burst=10_000, **settings_)
    async with await chat.start(close_timeout=1):
        room = await ada_and_bob(chat)
        async with faults.stalled_client(chat.ws_uri) as stalled:
            stalled.send_text(encode({"type": "join", "room": "lobby", "nick": "stalled"}))
            room.expected_changes += [{"event": "join", "nick": "stalled"}, {"event": "leave", "nick": "stalled"}]
            while chat.kicked == 0:
                assert room.said < 3000, "the stalled reader was never closed"
                await room.chat_a_little(padding=" " + "x" * 400)  # fill the stalled one's buffers soon
                if "slow_after" in settings_:
                    await asyncio.sleep(0.02)  # time is the point here: stay behind, not far behind
            await room.chat_a_little()
        room.check()
        assert chat.server is not None
        assert [line for line in chat.server.transcript.lines if "too slow" in line] == ["client 3: stalled " + reason.replace("too slow", "is too slow")]
        for client in (room.ada, room.bob):
            await client.close()


async def test_a_reader_that_pauses_but_catches_up_stays() -> None:
    chat = SmallBufferChat(presence_delay=0.01, rate=10_000, burst=10_000, slow_after=3.0)
    async with await chat.start(close_timeout=1):
        ada, pauser = await ChatClient.connect(chat.ws_uri), await ChatClient.connect(chat.ws_uri, max_queue=1)
        await ada.join("lobby", "ada")
        await pauser.join("lobby", "pauser")
        await ada.recv()  # pauser joined
        pauser.ws.transport.pause_reading()
        for n in range(600):  # a burst it cannot take at once: its data waits in the server's buffer
            await ada.say(f"{n} " + "x" * 400)
            assert (await ada.recv())["seq"] == n + 1
        assert [c.nick for c in chat.clients if c.behind_since is not None] == ["pauser"]
        pauser.ws.transport.resume_reading()
        got = [m["seq"] async for m in _messages(pauser, 600)]
        assert got == list(range(1, 601)) and chat.kicked == 0
        for client in (ada, pauser):
            await client.close()


# -- a peer nobody here wrote ------------------------------------------------------------------------


async def test_websocket_client_as_a_peer_gets_exactly_what_the_protocol_says(room: Room) -> None:
    import websocket  # websocket-client (requirements.txt), a blocking client: run it in a thread

    def peer() -> list[dict[str, Any]]:
        ws = websocket.create_connection(room.chat.ws_uri, timeout=5)
        got = [json.loads(ws.recv())]
        for data in (
            encode({"type": "join", "room": "lobby", "nick": "peer"}),
            '{"v": 1, "type": "say", "text": "\\ud800"}',
            "[" * 50_000,
            encode({"type": "say", "text": "from websocket-client"}),
        ):
            ws.send(data)
            got.append(json.loads(ws.recv()))
        ws.close()
        return got

    hello, joined, surrogate, deep, message = await asyncio.to_thread(peer)
    assert hello["type"] == "hello" and joined["members"] == ["ada", "bob", "peer"]
    assert (surrogate["code"], deep["code"]) == ("bad-json", "bad-json")
    assert (message["nick"], message["text"]) == ("peer", "from websocket-client")
    room.expected_changes += [{"event": "join", "nick": "peer"}, {"event": "leave", "nick": "peer"}]
    room.others = 1
    while {"event": "leave", "nick": "peer"} not in [c for m in room.logs["ada"] if m["type"] == "presence" for c in m["changes"]]:
        room.logs["ada"].append(await room.ada.recv())


async def test_a_connection_over_the_cap_after_the_handshake_gets_closing_and_1013() -> None:
    # Without process_request, nothing refuses at the handshake: this is the path of connections that passed
    # the handshake check together and overshot the cap.
    chat = ChatServer(max_clients=1)
    async with wslab.start(chat.handler, name="no-handshake-check") as server:
        chat.server = server
        async with ChatClient(server.uri) as first:
            async with connect(server.uri) as second:
                assert json.loads(await second.recv()) == {"v": 1, "type": "closing", "code": 1013, "reason": "try again later: the chat has its maximum of 1 clients"}
                await second.wait_closed()
                assert second.close_code == 1013
            assert first.hello["type"] == "hello"
