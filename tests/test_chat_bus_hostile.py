"""The Redis bus reads what other processes wrote: whatever a foreign or damaged writer left there, it goes on.

Another chat version, a corrupted entry, or anything else with access to the same Redis may have written
arbitrary bytes, missing fields, deep or huge JSON, lone surrogates, bidi and zero-width characters into a
room's stream, its history or its members hash. The properties: the reader task never dies, delivery to
the other members and rooms never stops, and each bad entry is logged once, escaped, and counted.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wslab import services
from wslab.chat.bus import BadEntry, RedisBus, decode_event, decode_owner
from wslab.chat.client import ChatClient
from wslab.chat.cluster import ClusterChat
from wslab.chat.protocol import encode_bytes
from wslab.servers import _registry

from .conftest import require
from .test_hostile_input import HOSTILE_JSON, TEXT

PURE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIVE = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REFUSED = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
BIDI = {"RLO", "LRO", "RLE", "LRE", "RLI", "LRI", "FSI", "PDF", "PDI"}


def as_bytes(text: str) -> bytes:
    """What a writer in another language may store: lone surrogates become bytes that are not UTF-8."""
    return text.encode("utf-8", "surrogatepass")


NUMBER = st.one_of(st.integers(), st.integers(-(2**70), 2**70), st.booleans(), st.floats(allow_nan=False))
EVENT_LIKE = st.one_of(  # the right shape, with hostile values in every field
    st.builds(lambda seq, nick, text: {"type": "message", "seq": seq, "nick": nick, "text": text}, NUMBER, TEXT, TEXT),
    st.builds(lambda event, nick, count: {"type": "presence", "event": event, "nick": nick, "count": count},
              st.one_of(st.sampled_from(["join", "leave"]), TEXT), TEXT, NUMBER),
    st.builds(lambda seq, nick, text: {"seq": seq, "nick": nick, "text": text}, NUMBER, TEXT, TEXT),
)
RAW = st.one_of(
    st.binary(max_size=80),
    HOSTILE_JSON.map(as_bytes),
    EVENT_LIKE.map(lambda event: as_bytes(json.dumps(event, ensure_ascii=False))),
    EVENT_LIKE.map(lambda event: json.dumps(event).encode()),  # lone surrogates as \ud800 escapes
)
FIELDS = st.one_of(  # a stream entry: its "e" field, or anything else
    RAW.map(lambda raw: {b"e": raw}),
    RAW.map(lambda raw: {b"x": raw}),
    RAW.map(lambda raw: {b"e": raw, b"extra": b"1"}),
)
OWNER = st.one_of(RAW, st.builds(lambda node, nick: as_bytes(f"{node}\t{nick}"), TEXT, TEXT))


def fit_to_send(value: Any) -> bool:
    """A string a browser can be sent and shown: UTF-8, nothing invisible, reordering or line-breaking."""
    if not isinstance(value, str):
        return True
    return not any(unicodedata.category(ch) in REFUSED and ch != "\u200d" for ch in value)


def readable(line: str) -> bool:
    """A log line that prints as one honest line (everything odd escaped)."""
    line.encode("utf-8")
    return not any(
        (unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") and ch != "\t") or unicodedata.bidirectional(ch) in BIDI
        for ch in line
    )


# -- the decode point alone -----------------------------------------------------------------------


@PURE
@given(RAW, st.booleans())
def test_decode_event_gives_the_exact_shape_fit_to_send_or_bad_entry(raw: bytes, history: bool) -> None:
    try:
        event = decode_event(raw, history=history)
    except BadEntry as error:
        assert str(error) and str(error).encode("utf-8")
        return
    kind = "message" if history else event["type"]
    fields = {"message": {"seq", "nick", "text"}, "presence": {"event", "nick", "count"}}[kind]
    assert set(event) == fields | (set() if history else {"type"})
    assert all(fit_to_send(value) for value in event.values()), event
    assert all(type(event[name]) is int and 0 <= event[name] < 2**53 for name in fields & {"seq", "count"})
    json.loads(encode_bytes(event))  # it goes out to browsers as strict JSON


@PURE
@given(OWNER)
def test_decode_owner_gives_a_process_and_a_nick_fit_to_send_or_bad_entry(raw: bytes) -> None:
    try:
        node, nick = decode_owner(raw)
    except BadEntry as error:
        assert str(error)
        return
    assert node and nick and fit_to_send(nick)


# -- a real Redis -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """One redis-server for the module (each test uses a prefix of its own), outside wslab's registry."""
    require(shutil.which("redis-server") is not None, "redis-server (Debian package redis-server)")
    server = asyncio.run(services.start_redis("hostile-bus-redis"))
    del _registry[server.name]  # it outlives each test on purpose: the per-test leak check must not see it
    yield server.url
    server._stop_now()


def prefix() -> str:
    return f"t{secrets.token_hex(4)}"


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` (every 10 ms, at most ``timeout`` s)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def distinct_bad(raws: list[Any], decode: Callable[[Any], object]) -> int:
    """How many different entries ``decode`` refuses."""
    bad = set()
    for raw in raws:
        try:
            decode(raw)
        except BadEntry:
            bad.add(repr(raw))
    return len(bad)


@LIVE
@given(entries=st.lists(FIELDS, min_size=1, max_size=4), history=st.lists(RAW, max_size=3), owners=st.lists(OWNER, max_size=3))
def test_whatever_another_writer_left_is_skipped_and_logged_once_and_stops_nothing(
    redis_url: str, entries: list[dict[bytes, bytes]], history: list[bytes], owners: list[bytes]
) -> None:
    async def scenario() -> None:
        import redis.asyncio as aioredis

        lines: list[str] = []
        got: list[tuple[str, dict[str, Any]]] = []
        bus = RedisBus(redis_url, prefix=prefix(), ttl=5, timeout=1, log=lines.append)
        raw = aioredis.from_url(redis_url)
        await bus.start(lambda room, event_id, event: got.append((room, event)))
        try:
            for room in ("lobby", "side"):
                joined = await bus.join(room, "ada", "ada")
                assert joined is not None
                bus.watch(room, joined.id)
            members, log, history_key, _, rooms = bus._keys("lobby")
            for fields in entries:
                await raw.xadd(log, fields)
            for entry in history:
                await raw.rpush(history_key, entry)
            for n, owner in enumerate(owners):
                await raw.hset(members, f"foreign-{n}", owner)
            await raw.sadd(rooms, b"\xff not UTF-8")
            await bus.say("lobby", "ada", "after the bad entries")
            await bus.say("side", "ada", "in another room")
            valid = [decode_event(f[b"e"]) for f in entries if not _bad(f.get(b"e"))]  # (rarely, one is fine)
            expected = [("lobby", e["text"]) for e in valid if e["type"] == "message"]
            expected += [("lobby", "after the bad entries"), ("side", "in another room")]
            texts = lambda: [(room, event["text"]) for room, event in got if event["type"] == "message"]  # noqa: E731
            await eventually(lambda: len(texts()) == len(expected))
            assert texts() == expected
            assert not any(task.done() for task in bus._tasks)  # the reader, the heartbeat, the reaper
            bad_stream = sum(1 for fields in entries if _bad(fields.get(b"e")))  # each entry once: ids differ
            assert len(lines) == bus.skipped == bad_stream

            # a join reads the members hash and the history: bad ones skipped, each logged once
            joined = await bus.join("lobby", "bob", "bob")
            assert joined is not None
            valid_owners = [decode_owner(o)[1] for o in owners if not _bad(o, decode_owner)]
            assert joined.members == sorted(["ada", "bob", *valid_owners])
            assert all(fit_to_send(entry["text"]) for entry in joined.history)
            after_join = len(lines)
            assert after_join == bad_stream + distinct_bad(history, lambda r: decode_event(r, history=True)) + distinct_bad(owners, decode_owner)
            assert await bus.join("lobby", "carl", "carl") is not None
            await bus.reap()
            assert len(lines) == after_join + 1  # only the room name that is not UTF-8 was new to the log
            await bus.reap()
            assert await bus.join("lobby", "dan", "dan") is not None
            assert len(lines) == after_join + 1 == bus.skipped
            assert all(readable(line) for line in lines), lines
        finally:
            await bus.close()
            await raw.aclose()

    asyncio.run(scenario())


def _bad(raw: object, decode: Callable[[Any], object] = decode_event) -> bool:
    try:
        decode(raw)
    except BadEntry:
        return True
    return False


async def test_a_deliver_that_fails_on_one_room_stops_no_other_room(redis_url: str) -> None:
    lines: list[str] = []
    got: list[str] = []

    def deliver(room: str, event_id: Any, event: dict[str, Any]) -> None:
        if room == "lobby":
            raise KeyError("a bug in the chat")
        got.append(event.get("text", ""))

    bus = RedisBus(redis_url, prefix=prefix(), ttl=5, timeout=1, log=lines.append)
    await bus.start(deliver)
    try:
        for room in ("lobby", "side"):
            joined = await bus.join(room, "ada", "ada")
            assert joined is not None
            bus.watch(room, joined.id)
        for n in range(3):
            await bus.say("lobby", "ada", f"lobby {n}")
            await bus.say("side", "ada", f"side {n}")
        await eventually(lambda: got[-1:] == ["side 2"])
        assert [text for text in got if text] == ["side 0", "side 1", "side 2"]
        assert lines == ["bus: delivering an event of room 'lobby' failed: KeyError: 'a bug in the chat'"]  # once
    finally:
        await bus.close()


# -- the chat on two processes' buses, with good clients ---------------------------------------------


class Pair:
    """ada and bob in "lobby", each on a chat of its own, the two sharing one Redis under a fresh prefix."""

    def __init__(self, chats: list[ClusterChat], ada: ChatClient, bob: ChatClient, logs: list[list[str]]) -> None:
        self.chats, self.ada, self.bob, self.logs = chats, ada, bob, logs
        self.said = 0

    @property
    def buses(self) -> list[RedisBus]:
        return [chat.bus for chat in self.chats]  # type: ignore[misc]

    async def chat_a_little(self) -> None:
        """ada and bob each say one thing; each receives exactly both, next, with the next numbers."""
        for speaker in (self.ada, self.bob):
            self.said += 1
            await speaker.say(f"good {self.said}")
            for reader in (self.ada, self.bob):
                message = await reader.recv()
                assert (message["type"], message["seq"], message["text"]) == ("message", self.said, f"good {self.said}"), message


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[Pair]:
    logs: list[list[str]] = [[], []]
    name = prefix()
    chats = [ClusterChat(bus=RedisBus(redis_url, prefix=name, ttl=1, timeout=1, log=log.append), presence_delay=0.01) for log in logs]
    for n, chat in enumerate(chats):
        await chat.start(name=f"hostile-chat-{n}")
    ada, bob = await ChatClient.connect(chats[0].ws_uri, proxy=None), await ChatClient.connect(chats[1].ws_uri, proxy=None)
    await ada.join("lobby", "ada")
    await bob.join("lobby", "bob")
    assert (await ada.recv())["changes"] == [{"event": "join", "nick": "bob"}]
    pair = Pair(chats, ada, bob, logs)
    await pair.chat_a_little()
    yield pair
    await pair.chat_a_little()
    for client in (ada, bob):
        await client.close()
    for chat in chats:
        await chat.stop()
    assert all(readable(line) for log in logs for line in log)


FOREIGN = {  # one of each kind, as a writer with access to the same Redis may leave them in a room's stream
    "a nick with a bidi override": {b"e": json.dumps({"type": "message", "seq": 99, "nick": "\u202eada", "text": "hi"}).encode()},
    "a zero-width nick": {b"e": json.dumps({"type": "message", "seq": 99, "nick": "ada\u200b", "text": "hi"}, ensure_ascii=False).encode()},
    "a lone surrogate": {b"e": b'{"type": "message", "seq": 99, "nick": "eve", "text": "\\udc00"}'},
    "not UTF-8": {b"e": b'{"type": "message", "seq": 99, "nick": "\xff", "text": "hi"}'},
    "deep JSON": {b"e": b"[" * 100_000 + b"]" * 100_000},
    "a huge number": {b"e": b'{"type": "presence", "event": "join", "nick": "eve", "count": ' + b"9" * 5000 + b"}"},
    "a missing field": {b"e": b'{"type": "presence", "event": "join", "nick": "eve"}'},
    "a text over the limit": {b"e": json.dumps({"type": "message", "seq": 99, "nick": "eve", "text": "x" * 100_000}).encode()},
    "no event field": {b"x": b"1"},
    "another version's event": {b"e": b'{"type": "reaction", "seq": 99, "nick": "eve", "emoji": "+1"}'},
}


async def test_foreign_stream_entries_reach_no_client_and_the_room_chats_on(pair: Pair) -> None:
    import redis.asyncio as aioredis

    raw = aioredis.from_url(pair.buses[0].url)
    try:
        for fields in FOREIGN.values():
            await raw.xadd(pair.buses[0]._keys("lobby")[1], fields)
    finally:
        await raw.aclose()
    await pair.chat_a_little()  # the next thing each receives is the next good message: nothing foreign
    await eventually(lambda: all(len(log) == len(FOREIGN) for log in pair.logs))
    for log, bus in zip(pair.logs, pair.buses):
        assert bus.skipped == len(FOREIGN) and all(line.startswith("bus: skipped event ") for line in log)
    line = next(line for line in pair.logs[0] if "U+202E" in line)
    assert "\\u202eada" in line and "\u202e" not in line  # readable, and it cannot reorder the log line


async def test_a_room_whose_stream_key_holds_another_type_stops_only_that_room(pair: Pair) -> None:
    import redis.asyncio as aioredis

    async with ChatClient(pair.chats[1].ws_uri, proxy=None) as carl:
        assert (await carl.join("side", "carl"))["type"] == "joined"
        raw = aioredis.from_url(pair.buses[0].url)
        try:
            stream = pair.buses[0]._keys("side")[1]
            await raw.delete(stream)
            await raw.set(stream, "not a stream")  # XREAD over every watched room now answers WRONGTYPE
        finally:
            await raw.aclose()
        await carl.say("into the broken room")
        assert (await carl.recv())["code"] == "unavailable"  # a clear error, not a hang
        await pair.chat_a_little()  # lobby is read on, on both processes
    assert sum("holds a string, not a stream" in line for line in pair.logs[1]) == 1
    assert sum("Redis refused say in room 'side'" in line for line in pair.logs[1]) == 1


async def test_foreign_members_and_history_cost_a_join_nothing_and_are_logged_once(pair: Pair) -> None:
    import redis.asyncio as aioredis

    members, _, history, *_ = pair.buses[0]._keys("lobby")
    raw = aioredis.from_url(pair.buses[0].url)
    try:
        await raw.hset(members, mapping={"x1": b"\xff\xfe", "x2": "no tab here", "x3": "node\tev\u202ee"})
        await raw.rpush(history, b"{not json", json.dumps({"seq": 1, "nick": "eve", "text": "\x1b[31m"}))
    finally:
        await raw.aclose()
    for n in range(2):  # joining twice: logged once
        async with ChatClient(pair.chats[0].ws_uri, proxy=None) as carl:
            joined = await carl.join("lobby", "carl")
            assert joined["members"] == ["ada", "bob", "carl"]
            assert [entry["text"] for entry in joined["history"]] == [f"good {n}" for n in range(1, pair.said + 1)]
            for client in (pair.ada, pair.bob):
                assert (await client.recv())["changes"] == [{"event": "join", "nick": "carl"}]
        for client in (pair.ada, pair.bob):
            assert (await client.recv())["changes"] == [{"event": "leave", "nick": "carl"}]
    await pair.buses[0].reap()  # the reaper walks past them too
    assert len(pair.logs[0]) == 5 and pair.buses[0].skipped == 5
    await pair.chat_a_little()
