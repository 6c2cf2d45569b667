"""One-line checks for the exercises: run the learner's code against real connections, print PASS or FAIL.

>>> from wslab import check
>>> await check.shout(shout)            # doctest: +SKIP
PASS: shout - every message came back in capital letters

A check starts its own servers (named ``check-...``, so the learner's servers keep running), is bounded in
time, stops what it started, never raises, and returns a :class:`Verdict` (truthy when it passed).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.client import backoff
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidHandshake

from .errors import LegacyHandlerError
from .frames import Frame, Opcode, parse_response, upgrade_request
from .servers import BackgroundServer, start

__all__ = [
    "Verdict",
    "announcements",
    "auth_deadline",
    "binary_echo",
    "first_five",
    "give_up_after",
    "long_ping",
    "names",
    "resume",
    "rooms_endpoint",
    "shout",
    "shout_count",
    "silent_server",
    "slow_down",
    "two_fragments",
]

TIMEOUT = 5.0  # the most any one check may take, in seconds
STEP = 1.0  # the most one expected message may take


@dataclass
class Verdict:
    """The result of a check: ``passed`` and the text it printed. Shows nothing more in a notebook."""

    exercise: str
    passed: bool
    text: str

    def __bool__(self) -> bool:
        return self.passed

    def _ipython_display_(self) -> None:  # the printed verdict is enough
        pass


_UNSET: Any = object()


class Fail(Exception):
    """Raised inside a check to end it with a FAIL verdict."""

    def __init__(self, hint: str, *, sent: Any = _UNSET, got: Any = _UNSET, expected: Any = _UNSET) -> None:
        super().__init__(hint)
        self.lines = [f"{k}: {v}" for k, v in (("sent", sent), ("got", got), ("expected", expected)) if v is not _UNSET]
        self.lines.append(f"hint: {hint}")


@dataclass
class _Run:
    """What one check started, so that it is stopped whatever happens."""

    name: str
    servers: list[BackgroundServer] = field(default_factory=list)
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def start(self, handler: Any, port: int = 0, **kwargs: Any) -> BackgroundServer:
        kwargs.setdefault("close_timeout", 1)
        server = await start(handler, name=f"check-{self.name}", port=port, **kwargs)
        self.servers.append(server)
        return server

    def handler_errors(self) -> list[str]:
        return [line for s in self.servers for line in s.transcript.lines if "connection handler failed" in line]

    async def stop(self) -> None:
        for cleanup in self.cleanups:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await cleanup()
        for server in self.servers:
            try:
                async with asyncio.timeout(3):
                    await server.stop(close_timeout=0.5)
            except Exception:
                server._stop_soon(0)


async def _run(name: str, body: Callable[[_Run], Awaitable[str]], timeout: float = TIMEOUT) -> Verdict:
    """Run one check's body, bounded, and turn whatever happens into a printed verdict."""
    run = _Run(name)
    lines: list[str] = []
    passed = False
    try:
        async with asyncio.timeout(timeout):
            summary = await body(run)
        passed = True
    except Fail as failure:
        lines = failure.lines
    except TimeoutError:
        lines = [f"hint: no result within {timeout:g} s: is something waiting forever (a recv() nobody answers)?"]
    except LegacyHandlerError as error:
        lines = [f"hint: {error}"]
    except ConnectionClosed as error:
        lines = [
            f"got: the connection closed: {error}",
            "hint: the server ended the connection before answering: does the handler return (or fail) too early?",
        ]
    except Exception as error:  # the learner's code raised: report it, never crash the kernel
        lines = [f"got: {type(error).__name__}: {error}", "hint: your code raised this exception; fix it and run again"]
    finally:
        await run.stop()
    errors = run.handler_errors()
    if passed:
        text = f"PASS: {name} - {summary}"
    else:
        if errors:
            lines.insert(0, "server: " + "; ".join(dict.fromkeys(e.split(": ", 1)[1] for e in errors)))
        text = "\n".join([f"FAIL: {name}"] + [f"  {line}" for line in lines])
    print(text)
    return Verdict(name, passed, text)


def _coroutine_function(fn: Any, what: str, example: str) -> None:
    if not inspect.iscoroutinefunction(fn):
        raise Fail(f"pass {what}, defined with `async def {example}:` (got {type(fn).__name__})")


async def _recv(ws: Any, who: str, sent: Any, expected: Any, hint: str) -> Any:
    """One message, or a FAIL that says what was sent and what was expected."""
    try:
        async with asyncio.timeout(STEP):
            return await ws.recv()
    except TimeoutError:
        raise Fail(hint, sent=sent, got=f"{who} got nothing in {STEP:g} s", expected=expected) from None
    except ConnectionClosed as closed:
        raise Fail(hint, sent=sent, got=f"{who}'s connection closed: {closed}", expected=expected) from None


# ---------------------------------------------------------------------------------------------- 00


async def shout(handler: Any) -> Verdict:
    """Chapter 00, exercise 1: ``handler`` answers every message in capital letters."""

    async def body(run: _Run) -> str:
        server = await run.start(handler)
        async with connect(server.uri) as ws:
            for text in ("quiet please", "Hello, World"):
                await ws.send(text)
                got = await _recv(ws, "the client", repr(text), repr(text.upper()), "send back message.upper()")
                if got != text.upper():
                    hint = "reply with message.upper(), not the message itself" if got == text else "reply with message.upper()"
                    raise Fail(hint, sent=repr(text), got=repr(got), expected=repr(text.upper()))
        return "every message came back in capital letters"

    return await _run("shout", body)


def _printed(server: BackgroundServer, label: str) -> list[str]:
    skip = ("connected to ", "closed ", "connection handler failed")
    prefix = f"{label}: "
    return [
        line[len(prefix) :]
        for line in server.transcript.lines
        if line.startswith(prefix) and not line[len(prefix) :].startswith(skip)
    ]


async def shout_count(handler: Any) -> Verdict:
    """Chapter 00, exercise 2: ``handler`` shouts and prints how many messages its client has sent so far."""

    async def body(run: _Run) -> str:
        server = await run.start(handler)
        for _ in range(2):
            async with connect(server.uri) as ws:
                for text in ("one", "two"):
                    await ws.send(text)
                    got = await _recv(ws, "the client", repr(text), repr(text.upper()), "keep shouting")
                    if got != text.upper():
                        raise Fail("keep replying with message.upper()", sent=repr(text), got=repr(got), expected=repr(text.upper()))
        await server.wait_idle()
        for label in ("client 1", "client 2"):
            printed = _printed(server, label)
            counts = [int(found[-1]) for found in (re.findall(r"\d+", line) for line in printed) if found]
            if counts != [1, 2]:
                hint = "print the count after each message, e.g. print(f'{count} message(s) so far')"
                if counts == [3, 4]:
                    hint = "the count is shared by all clients: keep the counter in the handler (a local variable)"
                raise Fail(hint, sent=f"two messages from {label}", got=f"{label} printed {printed}", expected="counts 1 then 2")
        return "two clients, each counted 1, 2"

    return await _run("shout_count", body)


# ---------------------------------------------------------------------------------------------- 01


async def _raw_echo(run: _Run) -> tuple[BackgroundServer, list[Any], asyncio.StreamReader, asyncio.StreamWriter]:
    """An echo server that records what it receives, and a raw connection to it, handshake done."""
    received: list[Any] = []

    async def recording_echo(websocket: Any) -> None:
        with contextlib.suppress(ConnectionClosed):  # the raw connection may end without a close frame
            async for message in websocket:
                received.append(message)
                await websocket.send(message)

    server = await run.start(recording_echo, compression=None, ping_interval=None)
    reader, writer = await asyncio.open_connection(server.host, server.port)

    async def close() -> None:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    run.cleanups.append(close)
    writer.write(upgrade_request(f"{server.host}:{server.port}", "/check"))
    status, _ = parse_response(await reader.readuntil(b"\r\n\r\n"))
    if " 101 " not in status + " ":
        raise Fail("the check's own handshake failed; run the chapter's setup cell again", got=status)
    return server, received, reader, writer


async def _call_raw(fn: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, waiting: str) -> Any:
    try:
        async with asyncio.timeout(2):
            return await fn(reader, writer)
    except TimeoutError:
        raise Fail(waiting, got="your function was still waiting after 2 s") from None


async def _server_closed(server: BackgroundServer, writer: asyncio.StreamWriter) -> str:
    """How the server's side of the raw connection ended (from its transcript)."""
    writer.close()
    with contextlib.suppress(Exception):
        await server.wait_idle(1)
    return next((line.split(": ", 1)[1] for line in server.transcript.lines if ": closed " in line), "")


async def binary_echo(fn: Any) -> Verdict:
    """Chapter 01, exercise 1: ``await fn(reader, writer)`` sends bytes(range(10)) in a masked BINARY frame
    and returns the frame the echo server sends back."""
    payload = bytes(range(10))

    async def body(run: _Run) -> str:
        _coroutine_function(fn, "a coroutine function", "binary_echo(reader, writer)")
        server, received, reader, writer = await _raw_echo(run)
        frame = await _call_raw(fn, reader, writer, "send one frame, then read exactly one with read_frame(reader)")
        closed = await _server_closed(server, writer)
        if received != [payload]:
            hint = "send encode_frame(Opcode.BINARY, bytes(range(10)), mask=...)"
            if not received and "1002" in closed:
                hint = "the server closed with 1002 (protocol error): a client must mask, pass mask=b'....' (4 bytes)"
            elif received and isinstance(received[0], str):
                hint = "that was a TEXT frame: use Opcode.BINARY"
            raise Fail(hint, got=f"the server received {received} ({closed})", expected=f"the server receives {payload!r}")
        if not isinstance(frame, Frame):
            raise Fail("return the frame you read: `return await read_frame(reader)`", got=repr(frame), expected="a Frame")
        if frame.opcode != Opcode.BINARY or frame.payload != payload or frame.mask is not None:
            raise Fail("read the echo with read_frame(reader)", got=str(frame), expected=f"BINARY fin=1 unmasked, {payload!r}")
        return "a masked BINARY frame went out, an unmasked one came back"

    return await _run("binary_echo", body)


async def two_fragments(fn: Any) -> Verdict:
    """Chapter 01, exercise 2: ``await fn(reader, writer)`` sends "Hel" (TEXT, fin=False) and "lo" (CONT,
    fin=True), then returns the list of frames the echo server sends back."""

    async def body(run: _Run) -> str:
        _coroutine_function(fn, "a coroutine function", "two_fragments(reader, writer)")
        server, received, reader, writer = await _raw_echo(run)
        frames = await _call_raw(
            fn, reader, writer,
            "the server echoes whole messages, not frames: how many frames does one message come back in?",
        )
        closed = await _server_closed(server, writer)
        if received != ["Hello"]:
            hint = "first encode_frame(Opcode.TEXT, b'Hel', fin=False, mask=...), then encode_frame(Opcode.CONT, b'lo', mask=...)"
            if received == ["Hel", "lo"] or received == ["Hel"]:
                hint = "the first frame needs fin=False, or the server takes it as a whole message"
            elif "1002" in closed:
                hint = f"the server closed with {closed.removeprefix('closed ')}: the second frame must be a CONT frame, both masked"
            raise Fail(hint, got=f"the server received {received}", expected="the server receives one message, 'Hello'")
        if not isinstance(frames, list) or not all(isinstance(f, Frame) for f in frames):
            raise Fail("return a list of the frames you read with read_frame(reader)", got=repr(frames), expected="[Frame(...)]")
        if len(frames) != 1 or frames[0].opcode != Opcode.TEXT or frames[0].payload != b"Hello" or not frames[0].fin:
            raise Fail("the echo is one whole message", got=[str(f) for f in frames], expected="one frame: TEXT fin=1 unmasked, 'Hello'")
        return "two frames went out, one message 'Hello' came back in one frame"

    return await _run("two_fragments", body)


async def long_ping(fn: Any) -> Verdict:
    """Chapter 01, exercise 3: ``await fn(reader, writer)`` sends a PING with a 126-byte payload and returns
    the server's close ``(code, reason)`` from ``parse_close``."""

    async def body(run: _Run) -> str:
        _coroutine_function(fn, "a coroutine function", "long_ping(reader, writer)")
        server, _, reader, writer = await _raw_echo(run)
        result = await _call_raw(fn, reader, writer, "after the PING, read one frame: the server's CLOSE")
        closed = await _server_closed(server, writer)
        if "1002" not in closed:
            raise Fail(
                "send encode_frame(Opcode.PING, bytes(126), mask=...): control frames carry at most 125 bytes",
                got=f"the server: {closed or 'still open'}", expected="the server closes with 1002",
            )
        if isinstance(result, Frame):
            raise Fail("return parse_close(frame.payload), not the frame", got=str(result), expected="(1002, '...')")
        if not (isinstance(result, tuple) and len(result) == 2 and result[0] == 1002 and isinstance(result[1], str)):
            raise Fail("return parse_close(frame.payload) of the CLOSE frame you read", got=repr(result), expected="(1002, '...')")
        return f"the server closed with {result[0]} ({result[1]})"

    return await _run("long_ping", body)


# ---------------------------------------------------------------------------------------------- 02


async def _chat(run: _Run, cls: Any) -> BackgroundServer:
    if not isinstance(cls, type):
        raise Fail("pass the class itself (a subclass of ChatServer), not an instance", got=type(cls).__name__)
    app = cls()
    return await run.start(app.handler, process_request=app.process_request)


async def _said(ws: Any, who: str, text: str) -> dict[str, Any]:
    """Say ``text`` and wait for the room's answer to come back to ``ws``."""
    sent = {"type": "say", "text": text}
    await ws.send(json.dumps(sent))
    while True:
        got = json.loads(await _recv(ws, who, sent, "a 'said' message", "publish every 'say' to the room"))
        if got.get("type") == "said" and got.get("text") == text:
            return got


async def names(cls: Any) -> Verdict:
    """Chapter 02, exercise 1: ``cls()`` is a ChatServer whose "said" messages carry "from" (the ``name``
    in the query string, or "anonymous")."""

    async def body(run: _Run) -> str:
        server = await _chat(run, cls)
        async with connect(server.uri + "/room/lobby?name=ada") as ada, connect(server.uri + "/room/lobby") as anon:
            for ws, who, name in ((ada, "ada", "ada"), (anon, "a client without a name", "anonymous")):
                got = await _said(ws, who, f"hi from {name}")
                expected = {"type": "said", "room": "lobby", "text": f"hi from {name}", "from": name}
                if got != expected:
                    hint = "add \"from\": the name in the query string (urllib.parse.parse_qs), or \"anonymous\""
                    if got.get("room") != "lobby":
                        hint = "the room is the path without the query string: keep room_of()"
                    raise Fail(hint, sent=f"{who} said 'hi from {name}'", got=got, expected=expected)
        return "ada's messages come from 'ada', the others' from 'anonymous'"

    return await _run("names", body)


async def _http_get(server: BackgroundServer, path: str) -> tuple[str, list[tuple[str, str]], bytes]:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nConnection: close\r\n\r\n".encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in head[1:] if ":" in line]
        length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
        body = await reader.readexactly(length)
        return head[0], headers, body  # type: ignore[return-value]
    finally:
        writer.close()


async def rooms_endpoint(cls: Any) -> Verdict:
    """Chapter 02, exercise 2: ``cls()`` answers ``GET /rooms`` with a JSON object room -> members."""

    async def body(run: _Run) -> str:
        server = await _chat(run, cls)
        async with (
            connect(server.uri + "/room/lobby") as a,
            connect(server.uri + "/room/lobby") as b,
            connect(server.uri + "/room/kitchen") as c,
        ):
            for ws, who in ((a, "client a"), (b, "client b"), (c, "client c")):
                await _said(ws, who, "here")  # each one is in its room now
            status, headers, data = await _http_get(server, "/rooms")
        expected = {"lobby": 2, "kitchen": 1}
        if " 200 " not in status + " ":
            raise Fail("answer connection.respond(HTTPStatus.OK, json.dumps(...)) for /rooms", sent="GET /rooms", got=status, expected="HTTP/1.1 200 OK")
        types = [v for k, v in headers if k.lower() == "content-type"]
        if types != ["application/json"]:
            raise Fail(
                "del response.headers['Content-Type'] before setting it, or it is sent twice",
                sent="GET /rooms", got=f"Content-Type headers: {types}", expected="['application/json']",
            )
        try:
            rooms = json.loads(data)
        except ValueError:
            raise Fail("the body must be JSON: json.dumps(...)", sent="GET /rooms", got=data[:80], expected=expected) from None
        if rooms != expected:
            raise Fail("map each room to len(members)", sent="GET /rooms with 2 clients in lobby, 1 in kitchen", got=rooms, expected=expected)
        return "GET /rooms -> 200, application/json once, {'lobby': 2, 'kitchen': 1}"

    return await _run("rooms_endpoint", body)


async def announcements(cls: Any) -> Verdict:
    """Chapter 02, exercise 3: ``cls()`` publishes {"type": "joined"} and {"type": "left"} to the room."""

    async def body(run: _Run) -> str:
        server = await _chat(run, cls)
        async with connect(server.uri + "/room/lobby") as ada:
            await _said(ada, "ada", "anyone?")  # skips ada's own "joined", if any
            for event, step in (("joined", "bob joined"), ("left", "bob left")):
                if event == "joined":
                    bob = await connect(server.uri + "/room/lobby")
                    run.cleanups.append(bob.close)
                else:
                    await bob.close()
                expected = {"type": event, "room": "lobby"}
                got = json.loads(await _recv(ada, "ada", step, expected, f"publish {expected} to the room when a client {event.replace('joined', 'joins').replace('left', 'leaves')}"))
                if {k: got.get(k) for k in expected} != expected:
                    raise Fail(f"publish {expected} when a client {'enters' if event == 'joined' else 'leaves'}", sent=step, got=got, expected=expected)
        return "ada saw bob join and leave"

    return await _run("announcements", body)


# ---------------------------------------------------------------------------------------------- 03


async def _ticker(websocket: Any) -> None:
    n = 0
    with contextlib.suppress(ConnectionClosed):
        while True:
            n += 1
            await websocket.send(f"tick {n}")
            await asyncio.sleep(0.01)


async def first_five(fn: Any) -> Verdict:
    """Chapter 03, exercise 1: ``await fn(uri)`` returns the first five messages of a ticking server and
    leaves with a normal close."""

    async def body(run: _Run) -> str:
        _coroutine_function(fn, "a coroutine function", "first_five(uri)")
        server = await run.start(_ticker)
        try:
            async with asyncio.timeout(2):
                got = await fn(server.uri)
        except TimeoutError:
            raise Fail("the ticker never stops: `break` out of `async for` after five messages", got="still listening after 2 s") from None
        expected = [f"tick {n}" for n in range(1, 6)]
        if got != expected:
            raise Fail("collect messages in a list and return it after the fifth", got=got, expected=expected)
        try:
            await server.wait_idle(1)
        except TimeoutError:
            raise Fail("close the connection: `async with connect(uri) as websocket:`", got="the connection is still open", expected="closed 1000 (OK)") from None
        closed = next((line for line in server.transcript.lines if ": closed " in line), "")
        if "closed 1000" not in closed:
            raise Fail("leave `async with connect(...)` normally", got=closed, expected="client 1: closed 1000 (OK)")
        return "five ticks, then a normal close (1000)"

    return await _run("first_five", body)


def _quick_delays() -> Any:
    return backoff(initial_delay=0, min_delay=0.01, factor=1, max_delay=0.01)


async def give_up_after(factory: Any) -> Verdict:
    """Chapter 03, exercise 2: ``factory(n)`` returns a ``process_exception`` that retries ``n`` times, then
    returns the error, so that ``async for websocket in connect(...)`` ends."""

    async def body(run: _Run) -> str:
        if not callable(factory):
            raise Fail("pass a function: def give_up_after(n): ... return process_exception", got=type(factory).__name__)
        stopped = await run.start(_ticker)
        await stopped.stop()
        for n in (3, 1):
            decide = factory(n)
            if not callable(decide):
                raise Fail("give_up_after(n) must return a function of one argument, the exception", got=repr(decide))
            calls: list[Exception] = []
            answers: list[Any] = []

            def counting(exc: Exception) -> Exception | None:
                calls.append(exc)
                answers.append(decide(exc))
                return exc if len(calls) > 8 else answers[-1]

            ended: BaseException | None = None
            try:
                async for _ in connect(stopped.uri, reconnect_delays=_quick_delays, process_exception=counting, open_timeout=1):
                    raise Fail("the check's stopped server answered; run the check again")
            except OSError as exc:
                ended = exc
            expected = f"{n} retries: None {n} time(s), then the error ({n + 1} attempts)"
            shown = ["None" if a is None else type(a).__name__ for a in answers]
            if len(calls) > 8:
                raise Fail("after n failures, return the exception instead of None", sent=f"give_up_after({n})", got=f"still retrying: {shown}", expected=expected)
            if len(calls) != n + 1 or any(a is not None for a in answers[:-1]) or answers[-1] is not calls[-1]:
                hint = "count the calls in a variable of the function give_up_after returns (nonlocal), one fresh count per give_up_after(n)"
                raise Fail(hint, sent=f"give_up_after({n})", got=shown, expected=expected)
            if not isinstance(ended, ConnectionRefusedError):
                raise Fail("return the exception you were given", got=repr(ended), expected="ConnectionRefusedError")
        return "gave up after 3 retries (and after 1 with n=1), with ConnectionRefusedError"

    return await _run("give_up_after", body)


def _number(message: Any) -> int | None:
    found = re.findall(r"\d+", message) if isinstance(message, str) else []
    return int(found[-1]) if found else None


async def resume(handler: Any) -> Verdict:
    """Chapter 03, exercise 3: ``handler`` reads the number of the last message the client saw ("0" at
    first) and sends the next numbers, 1 past it and onwards; the check restarts the server in between."""

    async def body(run: _Run) -> str:
        server = await run.start(handler)
        port = server.port
        for last, count in ((0, 3), (3, 2)):
            if last:
                await server.stop(close_timeout=0.5)
                server = await run.start(handler, port=port)
            expected = list(range(last + 1, last + 1 + count))
            async with connect(server.uri) as ws:
                await ws.send(str(last))
                got = []
                for _ in expected:
                    message = await _recv(ws, "the client", repr(str(last)), expected, "after reading the client's number, send the numbers that follow it")
                    got.append(_number(message))
                    if got[-1] is None:
                        raise Fail("put the number in each message, e.g. str(n)", sent=repr(str(last)), got=repr(message), expected=expected)
            if got != expected:
                hint = "start from int(the client's number) + 1" if last else "number the messages 1, 2, 3, ..."
                raise Fail(hint, sent=repr(str(last)) + (" after a restart" if last else ""), got=got, expected=expected)
        return "1, 2, 3; restarted; resumed with 4, 5"

    return await _run("resume", body)


# ---------------------------------------------------------------------------------------------- 04


async def silent_server(fn: Any) -> Verdict:
    """Chapter 04, exercise 1: ``fn(reader, writer)``, an ``asyncio.start_server`` callback, completes the
    handshake and then never answers; a client with a 0.2 s keepalive must fail with 1011."""

    async def body(run: _Run) -> str:
        _coroutine_function(fn, "a coroutine function", "silent(reader, writer)")
        tasks: list[asyncio.Task[Any]] = []
        writers: list[asyncio.StreamWriter] = []

        async def serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            tasks.append(asyncio.current_task())  # type: ignore[arg-type]
            with contextlib.suppress(Exception):
                await fn(reader, writer)

        raw = await asyncio.start_server(serve_one, "127.0.0.1", 0)

        async def close() -> None:
            raw.close()
            for writer in writers:
                writer.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await raw.wait_closed()

        run.cleanups.append(close)
        uri = f"ws://127.0.0.1:{raw.sockets[0].getsockname()[1]}"
        try:
            ws = await connect(uri, ping_interval=0.2, ping_timeout=0.2, open_timeout=1, close_timeout=0.2)
        except (InvalidHandshake, TimeoutError, OSError) as exc:
            raise Fail(
                "answer 'HTTP/1.1 101 Switching Protocols' with Upgrade: websocket, Connection: Upgrade and "
                "Sec-WebSocket-Accept: accept_key(the client's key), then a blank line",
                got=f"{type(exc).__name__}: {exc}", expected="a completed handshake",
            ) from None
        try:
            async with asyncio.timeout(2):
                await ws.recv()
            raise Fail("never send anything after the handshake", got="a message", expected="silence")
        except TimeoutError:
            raise Fail("never answer the client's pings: do not read frames or send pongs", got="the connection was still open after 2 s") from None
        except ConnectionClosedError as exc:
            if exc.sent is None or exc.sent.code != 1011:
                raise Fail("keep the TCP connection open after the handshake (do not close the writer)", got=str(exc), expected="sent 1011 (internal error) keepalive ping timeout") from None
            return f"the client gave up: {type(exc).__name__}: {exc}"
        finally:
            await ws.close()

    return await _run("silent_server", body)


async def _close_of(ws: Any, within: float) -> Any:
    """The close frame the server sent, waiting at most ``within`` seconds."""
    async with asyncio.timeout(within):
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()
    return ws.protocol.close_rcvd


async def auth_deadline(handler: Any) -> Verdict:
    """Chapter 04, exercise 2: ``handler`` closes a silent client with 1008 "authentication timeout" after
    0.2 s, welcomes "s3cret" and refuses other tokens with 1008 "invalid token"."""

    async def body(run: _Run) -> str:
        server = await run.start(handler)
        async with connect(server.uri) as ws:
            for token, answer in (("s3cret", "welcome"),):
                await ws.send(token)
                got = await _recv(ws, "the client", repr(token), repr(answer), "keep the chapter's check of the token")
                if got != answer:
                    raise Fail("keep the chapter's check of the token", sent=repr(token), got=repr(got), expected=repr(answer))
        async with connect(server.uri) as ws:
            await ws.send("guess")
            close = await _close_of(ws, 1)
            if close is None or (close.code, close.reason) != (1008, "invalid token"):
                raise Fail("keep the chapter's check of the token", sent="'guess'", got=str(close), expected="1008 (policy violation) invalid token")
        async with connect(server.uri) as ws:
            try:
                close = await _close_of(ws, 1)
            except TimeoutError:
                raise Fail("make the deadline 0.2 s: asyncio.timeout(0.2)", sent="nothing", got="no close within 1 s", expected="1008 (policy violation) authentication timeout") from None
            if close is None or (close.code, close.reason) != (1008, "authentication timeout"):
                raise Fail("close with websocket.close(1008, 'authentication timeout')", sent="nothing", got=str(close), expected="1008 (policy violation) authentication timeout")
        return "welcome for s3cret, 1008 invalid token, 1008 authentication timeout within 1 s"

    return await _run("auth_deadline", body)


async def slow_down(handler: Any) -> Verdict:
    """Chapter 04, exercise 3: ``handler`` echoes at a normal pace and closes a flooding client with
    4029 "slow down"."""

    async def body(run: _Run) -> str:
        server = await run.start(handler)
        async with connect(server.uri) as ws:
            for n in range(3):
                await ws.send(f"hello {n}")
                got = await _recv(ws, "the client", f"'hello {n}'", f"'hello {n}'", "echo messages that come at a normal pace")
                if got != f"hello {n}":
                    raise Fail("echo every message", sent=f"'hello {n}'", got=repr(got), expected=f"'hello {n}'")
        async with connect(server.uri) as ws:
            for n in range(100):
                await ws.send(f"spam {n}")
            try:
                close = await _close_of(ws, 2)
            except TimeoutError:
                raise Fail("apply a RateLimit to every message, as rate_limited does", sent="100 messages at once", got="still open after 2 s", expected="4029 slow down") from None
        if close is None or (close.code, close.reason) != (4029, "slow down"):
            raise Fail("close with connection.close(4029, 'slow down') instead of 1008", sent="100 messages at once", got=str(close), expected="4029 slow down")
        return "normal pace echoed; a flood closed with 4029 slow down"

    return await _run("slow_down", body)
