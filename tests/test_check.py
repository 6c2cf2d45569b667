"""wslab.check: each check passes a correct solution and fails wrong ones with the right hint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.client import process_exception
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from wslab import Outbox, RateLimit, check, rate_limited
from wslab.frames import Opcode, accept_key, encode_frame, parse_close, read_frame

MASK = b"\x01\x02\x03\x04"


async def verdict(coro, capsys) -> tuple[bool, str]:  # type: ignore[no-untyped-def]
    result = await coro
    out = capsys.readouterr().out
    assert out.startswith("PASS: " if result else "FAIL: "), out
    return result.passed, out


async def expect_pass(coro, capsys) -> None:  # type: ignore[no-untyped-def]
    passed, out = await verdict(coro, capsys)
    assert passed, out


async def expect_fail(coro, capsys, *hints: str) -> None:  # type: ignore[no-untyped-def]
    passed, out = await verdict(coro, capsys)
    assert not passed, out
    for hint in hints:
        assert hint in out, out


# ---------------------------------------------------------------- 00


async def shout_ok(websocket):
    async for message in websocket:
        await websocket.send(message.upper())


async def shout_echo(websocket):
    async for message in websocket:
        await websocket.send(message)


async def shout_legacy(websocket, path):
    pass


async def shout_crash(websocket):
    async for message in websocket:
        raise KeyError(message)


async def test_shout(capsys):
    await expect_pass(check.shout(shout_ok), capsys)
    await expect_fail(check.shout(shout_echo), capsys, "not the message itself", "sent: 'quiet please'", "expected: 'QUIET PLEASE'")
    await expect_fail(check.shout(shout_legacy), capsys, "one argument")
    await expect_fail(check.shout(shout_crash), capsys, "connection handler failed: KeyError")


async def count_ok(websocket):
    count = 0
    async for message in websocket:
        count += 1
        print(f"{count} message(s) so far")
        await websocket.send(message.upper())


total = 0


async def count_shared(websocket):
    global total
    async for message in websocket:
        total += 1
        print(f"{total} message(s) so far")
        await websocket.send(message.upper())


async def test_shout_count(capsys):
    global total
    total = 0
    await expect_pass(check.shout_count(count_ok), capsys)
    await expect_fail(check.shout_count(count_shared), capsys, "shared by all clients", "client 2 printed")
    await expect_fail(check.shout_count(shout_ok), capsys, "print the count")


# ---------------------------------------------------------------- 01


async def binary_ok(reader, writer):
    writer.write(encode_frame(Opcode.BINARY, bytes(range(10)), mask=MASK))
    return await read_frame(reader)


async def binary_unmasked(reader, writer):
    writer.write(encode_frame(Opcode.BINARY, bytes(range(10))))
    return await read_frame(reader)


async def binary_as_text(reader, writer):
    writer.write(encode_frame(Opcode.TEXT, b"0123456789", mask=MASK))
    return await read_frame(reader)


async def test_binary_echo(capsys):
    await expect_pass(check.binary_echo(binary_ok), capsys)
    await expect_fail(check.binary_echo(binary_unmasked), capsys, "1002", "must mask")
    await expect_fail(check.binary_echo(binary_as_text), capsys, "use Opcode.BINARY")
    await expect_fail(check.binary_echo(lambda r, w: None), capsys, "async def binary_echo(reader, writer)")


async def fragments_ok(reader, writer):
    writer.write(encode_frame(Opcode.TEXT, b"Hel", fin=False, mask=MASK))
    writer.write(encode_frame(Opcode.CONT, b"lo", mask=MASK))
    return [await read_frame(reader)]


async def fragments_read_two(reader, writer):
    writer.write(encode_frame(Opcode.TEXT, b"Hel", fin=False, mask=MASK))
    writer.write(encode_frame(Opcode.CONT, b"lo", mask=MASK))
    return [await read_frame(reader), await read_frame(reader)]


async def fragments_two_texts(reader, writer):
    writer.write(encode_frame(Opcode.TEXT, b"Hel", fin=False, mask=MASK))
    writer.write(encode_frame(Opcode.TEXT, b"lo", mask=MASK))
    return [await read_frame(reader)]


async def fragments_fin(reader, writer):
    writer.write(encode_frame(Opcode.TEXT, b"Hel", mask=MASK))
    writer.write(encode_frame(Opcode.TEXT, b"lo", mask=MASK))
    return [await read_frame(reader)]


async def test_two_fragments(capsys):
    await expect_pass(check.two_fragments(fragments_ok), capsys)
    await expect_fail(check.two_fragments(fragments_read_two), capsys, "still waiting", "how many frames")
    await expect_fail(check.two_fragments(fragments_two_texts), capsys, "must be a CONT frame")
    await expect_fail(check.two_fragments(fragments_fin), capsys, "needs fin=False")


async def ping_ok(reader, writer):
    writer.write(encode_frame(Opcode.PING, bytes(126), mask=MASK))
    return parse_close((await read_frame(reader)).payload)


async def ping_frame(reader, writer):
    writer.write(encode_frame(Opcode.PING, bytes(126), mask=MASK))
    return await read_frame(reader)


async def ping_short(reader, writer):
    writer.write(encode_frame(Opcode.PING, bytes(125), mask=MASK))
    return parse_close((await read_frame(reader)).payload)


async def test_long_ping(capsys):
    await expect_pass(check.long_ping(ping_ok), capsys)
    await expect_fail(check.long_ping(ping_frame), capsys, "not the frame")
    await expect_fail(check.long_ping(ping_short), capsys, "at most 125 bytes")


# ---------------------------------------------------------------- 02: the chapter's ChatServer


class ChatServer:
    def __init__(self, queue_size=16):
        self.queue_size = queue_size
        self.rooms = {}

    @staticmethod
    def room_of(path):
        route = urlsplit(path).path
        name = route.removeprefix("/room/")
        return name if route.startswith("/room/") and name else None

    def process_request(self, connection, request):
        if self.room_of(request.path) is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "Connect to /room/<name>.\n")
        return None

    async def handler(self, websocket):
        room = self.room_of(websocket.request.path)
        async with Outbox(websocket, self.queue_size) as outbox:
            members = self.rooms.setdefault(room, set())
            members.add(outbox)
            try:
                async for data in websocket:
                    self.on_message(room, outbox, data, websocket)
            finally:
                members.discard(outbox)
                if not members:
                    del self.rooms[room]

    def on_message(self, room, outbox, data, websocket):
        message = json.loads(data)
        self.publish(room, {"type": "said", "room": room, "text": message["text"]})

    def publish(self, room, message):
        text = json.dumps(message)
        for outbox in self.rooms.get(room, ()):
            outbox.put(text)


class NamedOk(ChatServer):
    def on_message(self, room, outbox, data, websocket):
        name = parse_qs(urlsplit(websocket.request.path).query).get("name", ["anonymous"])[0]
        self.publish(room, {"type": "said", "room": room, "text": json.loads(data)["text"], "from": name})


class NamedWrongRoom(ChatServer):
    room_of = staticmethod(lambda path: path.removeprefix("/room/") if path.startswith("/room/") else None)

    def on_message(self, room, outbox, data, websocket):
        self.publish(room, {"type": "said", "room": room, "text": json.loads(data)["text"], "from": "ada"})


async def test_names(capsys):
    await expect_pass(check.names(NamedOk), capsys)
    await expect_fail(check.names(ChatServer), capsys, 'add "from"', "'from': 'ada'")
    await expect_fail(check.names(NamedWrongRoom), capsys, "without the query string")
    await expect_fail(check.names(NamedOk()), capsys, "pass the class itself")


class RoomsOk(ChatServer):
    def process_request(self, connection, request):
        if request.path == "/rooms":
            response = connection.respond(HTTPStatus.OK, json.dumps({r: len(m) for r, m in self.rooms.items()}))
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            return response
        return super().process_request(connection, request)


class RoomsTwoTypes(ChatServer):
    def process_request(self, connection, request):
        if request.path == "/rooms":
            response = connection.respond(HTTPStatus.OK, json.dumps({r: len(m) for r, m in self.rooms.items()}))
            response.headers["Content-Type"] = "application/json"
            return response
        return super().process_request(connection, request)


class RoomsWrongCounts(ChatServer):
    def process_request(self, connection, request):
        if request.path == "/rooms":
            response = connection.respond(HTTPStatus.OK, json.dumps(sorted(self.rooms)))
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            return response
        return super().process_request(connection, request)


async def test_rooms_endpoint(capsys):
    await expect_pass(check.rooms_endpoint(RoomsOk), capsys)
    await expect_fail(check.rooms_endpoint(RoomsTwoTypes), capsys, "sent twice", "'application/json'")
    await expect_fail(check.rooms_endpoint(RoomsWrongCounts), capsys, "len(members)")
    await expect_fail(check.rooms_endpoint(ChatServer), capsys, "200", "404")


class AnnouncingOk(ChatServer):
    async def handler(self, websocket):
        room = self.room_of(websocket.request.path)
        self.publish(room, {"type": "joined", "room": room})
        try:
            await super().handler(websocket)
        finally:
            self.publish(room, {"type": "left", "room": room})


class AnnouncingJoinOnly(ChatServer):
    async def handler(self, websocket):
        room = self.room_of(websocket.request.path)
        self.publish(room, {"type": "joined", "room": room})
        await super().handler(websocket)


async def test_announcements(capsys):
    await expect_pass(check.announcements(AnnouncingOk), capsys)
    await expect_fail(check.announcements(ChatServer), capsys, "ada got nothing", "'type': 'joined'")
    await expect_fail(check.announcements(AnnouncingJoinOnly), capsys, "sent: bob left", "'type': 'left'")


# ---------------------------------------------------------------- 03


async def first_five_ok(uri):
    from websockets.asyncio.client import connect

    seen = []
    async with connect(uri, proxy=None) as websocket:  # a server on this machine: never through a proxy
        async for message in websocket:
            seen.append(message)
            if len(seen) == 5:
                break
    return seen


async def first_five_forever(uri):
    from websockets.asyncio.client import connect

    seen = []
    async with connect(uri) as websocket:
        async for message in websocket:
            seen.append(message)
    return seen


async def first_five_no_close(uri):
    from websockets.asyncio.client import connect

    websocket = await connect(uri, close_timeout=0.1)  # its queue is full: closing it later waits that long
    seen = [await websocket.recv() for _ in range(5)]
    first_five_no_close.leaked = websocket  # closed by the test
    return seen


async def first_five_four(uri):
    return (await first_five_ok(uri))[:4]


async def test_first_five(capsys):
    await expect_pass(check.first_five(first_five_ok), capsys)
    await expect_fail(check.first_five(first_five_forever), capsys, "`break`")
    await expect_fail(check.first_five(first_five_four), capsys, "after the fifth", "'tick 5'")
    await expect_fail(check.first_five(first_five_no_close), capsys, "close the connection")
    await first_five_no_close.leaked.close()


def give_up_ok(n):
    failures = 0

    def decide(exc):
        nonlocal failures
        failures += 1
        return exc if failures > n else process_exception(exc)

    return decide


shared_failures = 0


def give_up_shared(n):
    def decide(exc):
        global shared_failures
        shared_failures += 1
        return exc if shared_failures > n else None

    return decide


def give_up_never(n):
    return lambda exc: None


async def test_give_up_after(capsys):
    await expect_pass(check.give_up_after(give_up_ok), capsys)
    await expect_fail(check.give_up_after(give_up_shared), capsys, "one fresh count per give_up_after(n)", "give_up_after(1)")
    await expect_fail(check.give_up_after(give_up_never), capsys, "still retrying", "return the exception")
    await expect_fail(check.give_up_after(lambda exc: None), capsys, "must return a function")


async def resume_ok(websocket):
    n = int(await websocket.recv())
    with contextlib.suppress(ConnectionClosed):  # the client leaves when it has enough: end cleanly
        while True:
            n += 1
            await websocket.send(str(n))
            await asyncio.sleep(0.01)


async def resume_from_one(websocket):
    await websocket.recv()
    n = 0
    while True:
        n += 1
        await websocket.send(f"message {n}")
        await asyncio.sleep(0.01)


async def resume_words(websocket):
    await websocket.recv()
    while True:
        await websocket.send("hello")
        await asyncio.sleep(0.01)


async def test_resume(capsys):
    await expect_pass(check.resume(resume_ok), capsys)
    await expect_fail(check.resume(resume_from_one), capsys, "int(the client's number) + 1", "after a restart")
    await expect_fail(check.resume(resume_words), capsys, "put the number in each message")


# ---------------------------------------------------------------- 04


async def read_key(reader):
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    return next(line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("sec-websocket-key:"))


async def silent_ok(reader, writer):
    key = await read_key(reader)
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode()
    )
    await asyncio.Event().wait()  # never answers, never returns


async def silent_bad_accept(reader, writer):
    await read_key(reader)
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
    await asyncio.Event().wait()


async def silent_hangs_up(reader, writer):
    key = await read_key(reader)
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode()
    )
    writer.close()


async def test_silent_server(capsys):
    await expect_pass(check.silent_server(silent_ok), capsys)
    await expect_fail(check.silent_server(silent_bad_accept), capsys, "Sec-WebSocket-Accept: accept_key")
    await expect_fail(check.silent_server(silent_hangs_up), capsys, "keep the TCP connection open")


USERS = {"s3cret": "ada", "hunter2": "bob"}


def auth_with(deadline, echo_as_user=True):
    async def first_message_auth(websocket):
        try:
            async with asyncio.timeout(deadline):
                token = await websocket.recv()
        except TimeoutError:
            await websocket.close(1008, "authentication timeout")
            return
        if token not in USERS:
            await websocket.close(1008, "invalid token")
            return
        await websocket.send(f"welcome {USERS[token]}")
        async for message in websocket:
            await websocket.send(f"{USERS[token]}: {message}" if echo_as_user else message)

    return first_message_auth


async def auth_plain_close(websocket):
    try:
        async with asyncio.timeout(0.2):
            token = await websocket.recv()
    except TimeoutError:
        await websocket.close()
        return
    if token not in USERS:
        await websocket.close(1008, "invalid token")
        return
    await websocket.send(f"welcome {USERS[token]}")
    async for message in websocket:
        await websocket.send(f"{USERS[token]}: {message}")


async def auth_whole_session(websocket):
    """The deadline around the whole session: a user who pauses is thrown out."""
    try:
        async with asyncio.timeout(0.2):
            token = await websocket.recv()
            await websocket.send(f"welcome {USERS[token]}")
            async for message in websocket:
                await websocket.send(f"{USERS[token]}: {message}")
    except TimeoutError:
        await websocket.close(1008, "authentication timeout")


async def test_auth_deadline(capsys):
    await expect_pass(check.auth_deadline(auth_with(0.2)), capsys)
    await expect_fail(check.auth_deadline(auth_with(2)), capsys, "asyncio.timeout(0.2)", "no close within 1 s")
    await expect_fail(check.auth_deadline(auth_plain_close), capsys, "close(1008, 'authentication timeout')", "1000 (OK)")
    await expect_fail(check.auth_deadline(auth_with(0.2, echo_as_user=False)), capsys, "f'{user}: {message}'", "got: 'hi'")
    await expect_fail(check.auth_deadline(auth_whole_session), capsys, "the deadline is for the token only", "1008")


async def strict_limited(connection, limit):
    async for message in connection:
        if not limit.allow():
            await connection.close(4029, "slow down")  # reads what is still coming until the client answers
            return
        yield message


async def slow_down_ok(websocket):
    async for message in strict_limited(websocket, RateLimit(per_second=5, burst=10)):
        await websocket.send(message)


async def slow_down_1008(websocket):
    async for message in rate_limited(websocket, RateLimit(per_second=5, burst=10)):
        await websocket.send(message)


async def test_slow_down(capsys):
    await expect_pass(check.slow_down(slow_down_ok), capsys)
    await expect_fail(check.slow_down(slow_down_1008), capsys, "close(4029, 'slow down') instead of 1008", "1008 (policy violation)")
    await expect_fail(check.slow_down(shout_echo), capsys, "apply a RateLimit")
    await expect_fail(check.slow_down(shout_ok), capsys, "echo every message")


@pytest.mark.parametrize("name", check.__all__[1:])
async def test_every_check_survives_garbage(name, capsys):
    """Whatever the learner passes, a check prints FAIL and returns; it never raises."""
    result = await getattr(check, name)(None)
    assert not result
    assert capsys.readouterr().out.startswith(f"FAIL: {name}")


# ---------------------------------------------------------------- 06


async def max_size_ok(uri):
    async with connect(uri, proxy=None) as ws:
        await ws.send("x" * 2_000_000)
        try:
            async with asyncio.timeout(0.5):
                await ws.recv()
        except ConnectionClosedError as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1009, f"closed with {closed.rcvd}"
        else:
            raise AssertionError("the server answered instead of closing with 1009")


async def max_size_only_sends(uri):
    async with connect(uri) as ws:
        await ws.send("x" * 2_000_000)


async def max_size_any_error(uri):
    async with connect(uri) as ws:
        await ws.send("x" * 2_000_000)
        try:
            await ws.recv()
        except ConnectionClosedError:
            return
        raise AssertionError("not closed")


async def max_size_any_close(uri):  # takes a normal close for the right one
    async with connect(uri) as ws:
        await ws.send("x" * 2_000_000)
        try:
            async with asyncio.timeout(0.5):
                async for _ in ws:
                    raise AssertionError("got an answer")
        except ConnectionClosedError:
            pass
        assert ws.close_code in (1000, 1009)


async def max_size_hangs(uri):
    async with connect(uri) as ws:
        await ws.send("x" * 2_000_000)
        await ws.wait_closed()
        assert ws.close_code == 1009


async def max_size_wrong_code(uri):
    async with connect(uri) as ws:
        await ws.send("x" * 2_000_000)
        try:
            await ws.recv()
        except ConnectionClosedError as closed:
            assert closed.rcvd.code == 1011


def max_size_sync(uri):
    pass


async def test_max_size_test(capsys):
    await expect_pass(check.max_size_test(max_size_ok), capsys)
    await expect_fail(check.max_size_test(max_size_only_sends), capsys, "answers 'too big' and stays open", "assert that the connection closes")
    await expect_fail(check.max_size_test(max_size_any_error), capsys, "closes with 1011 (internal error)", "check the close code")
    await expect_fail(check.max_size_test(max_size_any_close), capsys, "closes normally with 1000", "a normal close is not 1009")
    await expect_fail(check.max_size_test(max_size_hangs), capsys, "bound every wait", "got: still running after 1 s")
    await expect_fail(check.max_size_test(max_size_wrong_code), capsys, "must pass against a correct server", "AssertionError")
    await expect_fail(check.max_size_test(max_size_sync), capsys, "async def test_max_size(uri)")


async def going_away_ok(websocket):
    await websocket.recv()
    await websocket.close(1001, "going away")


async def going_away_at_once(websocket):
    await websocket.close(1001)


async def going_away_1000(websocket):
    await websocket.recv()


async def going_away_price_first(websocket):
    request = json.loads(await websocket.recv())
    await websocket.send(json.dumps({"symbol": request["subscribe"], "price": 42.5}))
    await websocket.close(1001)


async def going_away_never(websocket):
    await websocket.recv()
    await websocket.wait_closed()


async def test_going_away(capsys):
    await expect_pass(check.going_away(going_away_ok), capsys)
    await expect_fail(check.going_away(going_away_at_once), capsys, "wait for the subscription first", "closed before the client subscribed")
    await expect_fail(check.going_away(going_away_1000), capsys, "close with code 1001", "expected: received 1001 (going away)")
    await expect_fail(check.going_away(going_away_price_first), capsys, "close without sending any price", "42.5")
    await expect_fail(check.going_away(going_away_never), capsys, "close the connection once the subscription is read")


def percentiles_ok(samples):
    if len(samples) < 2:
        raise ValueError("need at least two samples")
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": cuts[49], "p99": cuts[98], "max": max(samples)}


def percentiles_mean(samples):
    return {**percentiles_ok(samples), "p50": statistics.mean(samples)}


def percentiles_off_by_one(samples):
    if len(samples) < 2:
        raise ValueError("need at least two samples")
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": cuts[50], "p99": cuts[98], "max": max(samples)}


def percentiles_max(samples):
    return {**percentiles_ok(samples), "p99": max(samples)}


def percentiles_sorts(samples):
    samples.sort()
    return percentiles_ok(samples)


def percentiles_exclusive(samples):  # the default method: on few samples, p99 lands above the maximum
    return {**percentiles_ok(samples), "p99": statistics.quantiles(samples, n=100)[98]}


def percentiles_no_guard(samples):
    if not samples:
        return {"p50": 0, "p99": 0, "max": 0}
    return percentiles_ok(samples)


def percentiles_tuple(samples):
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49], cuts[98]


async def test_percentiles(capsys):
    await expect_pass(check.percentiles(percentiles_ok), capsys)
    await expect_fail(check.percentiles(percentiles_mean), capsys, "p50 is the median, not the mean", "95 round trips")
    await expect_fail(check.percentiles(percentiles_off_by_one), capsys, "p50 is cuts[49]")
    await expect_fail(check.percentiles(percentiles_max), capsys, "p99 is not the maximum")
    await expect_fail(check.percentiles(percentiles_sorts), capsys, "leave the caller's list as it was")
    await expect_fail(check.percentiles(percentiles_exclusive), capsys, "use method='inclusive'", "'p99': 99.99")
    await expect_fail(check.percentiles(percentiles_no_guard), capsys, "raise ValueError when there are fewer than two samples", "sent: []")
    await expect_fail(check.percentiles(percentiles_tuple), capsys, "return a dict")
