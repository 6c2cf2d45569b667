"""Checks for chapter 04 (advanced): keepalive, an authentication deadline, a rate limit and a client that obeys it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidHandshake

from .core import Fail, Run, Verdict, loopback_connect, recv, require_coroutine_function, run

__all__ = ["auth_deadline", "polite_client", "silent_server", "slow_down"]


async def silent_server(fn: Any) -> Verdict:
    """Chapter 04, exercise 1: ``fn(reader, writer)``, an ``asyncio.start_server`` callback, completes the
    handshake and then never answers; a client with a 0.2 s keepalive must fail with 1011."""

    async def body(run: Run) -> str:
        require_coroutine_function(fn, "a coroutine function", "silent(reader, writer)")
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
            ws = await loopback_connect(uri, ping_interval=0.2, ping_timeout=0.2, open_timeout=1, close_timeout=0.2)
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

    return await run("silent_server", body)


async def _close_of(ws: Any, within: float) -> Any:
    """The close frame the server sent, waiting at most ``within`` seconds."""
    async with asyncio.timeout(within):
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()
    return ws.protocol.close_rcvd


USERS = {"s3cret": "ada", "hunter2": "bob"}  # the tokens of exercise 2 and whom they name


async def auth_deadline(handler: Any) -> Verdict:
    """Chapter 04, exercise 2: ``handler`` gives a client 0.2 s to send its token (else 1008 "authentication
    timeout"), refuses unknown tokens (1008 "invalid token"), welcomes a user by name, then echoes each message
    with the name in front for as long as the client likes, even after a pause longer than the deadline."""

    async def body(run: Run) -> str:
        server = await run.start(handler)
        for token, user in USERS.items():
            async with loopback_connect(server.uri) as ws:
                await ws.send(token)
                hint = "look the token up in USERS and answer f'welcome {user}'"
                got = await recv(ws, "the client", repr(token), repr(f"welcome {user}"), hint)
                if got != f"welcome {user}":
                    raise Fail(hint, sent=repr(token), got=repr(got), expected=repr(f"welcome {user}"))
                await asyncio.sleep(0.4)  # longer than the deadline: time is the point here
                expected = f"{user}: hi"
                hint = "the deadline is for the token only: after the welcome, echo every message as f'{user}: {message}'"
                try:
                    await ws.send("hi")
                except ConnectionClosed as closed:
                    raise Fail(hint, sent="'hi' after 0.4 s of silence", got=f"the connection closed: {closed}", expected=repr(expected)) from None
                got = await recv(ws, "the client", "'hi' after 0.4 s of silence", repr(expected), hint)
                if got != expected:
                    raise Fail(hint, sent="'hi' after 0.4 s of silence", got=repr(got), expected=repr(expected))
        async with loopback_connect(server.uri) as ws:
            await ws.send("guess")
            close = await _close_of(ws, 1)
            if close is None or (close.code, close.reason) != (1008, "invalid token"):
                raise Fail("refuse a token that is not in USERS with websocket.close(1008, 'invalid token')", sent="'guess'", got=str(close), expected="1008 (policy violation) invalid token")
        async with loopback_connect(server.uri) as ws:
            try:
                close = await _close_of(ws, 1)
            except TimeoutError:
                raise Fail("wait for the token at most 0.2 s: asyncio.timeout(0.2) around the first recv()", sent="nothing", got="no close within 1 s", expected="1008 (policy violation) authentication timeout") from None
            if close is None or (close.code, close.reason) != (1008, "authentication timeout"):
                raise Fail("close with websocket.close(1008, 'authentication timeout')", sent="nothing", got=str(close), expected="1008 (policy violation) authentication timeout")
        return "welcome ada and bob, echoes after a pause, 1008 invalid token, 1008 authentication timeout"

    return await run("auth_deadline", body)


async def slow_down(handler: Any) -> Verdict:
    """Chapter 04, exercise 3: ``handler`` echoes at a normal pace, closes a flooding client with
    4029 "slow down", and ends without an error."""

    async def body(run: Run) -> str:
        server = await run.start(handler)
        async with loopback_connect(server.uri) as ws:
            for n in range(3):
                await ws.send(f"hello {n}")
                got = await recv(ws, "the client", f"'hello {n}'", f"'hello {n}'", "echo messages that come at a normal pace")
                if got != f"hello {n}":
                    raise Fail("echo every message", sent=f"'hello {n}'", got=repr(got), expected=f"'hello {n}'")
        async with loopback_connect(server.uri) as ws:
            for n in range(100):
                await ws.send(f"spam {n}")
            try:
                close = await _close_of(ws, 2)
            except TimeoutError:
                raise Fail("apply a RateLimit to every message, as rate_limited does", sent="100 messages at once", got="still open after 2 s", expected="4029 slow down") from None
        if close is None or (close.code, close.reason) != (4029, "slow down"):
            raise Fail("close with connection.close(4029, 'slow down') instead of 1008", sent="100 messages at once", got=str(close), expected="4029 slow down")
        with contextlib.suppress(TimeoutError):  # the handler's error, if any, is logged as it ends
            await server.wait_idle(timeout=2)
        if any("ConnectionClosed" in line for line in run.handler_errors()):
            raise Fail(
                "your handler ended with an error after its own close: `async for` ends quietly only on 1000, "
                "1001 and 1005, so reading on after close(4029, ...) raises ConnectionClosedError; drain inside "
                "`with contextlib.suppress(ConnectionClosed):`, as rate_limited does",
                sent="100 messages at once", got="4029 slow down, then a handler error", expected="4029 slow down, handler ends cleanly",
            )
        return "normal pace echoed; a flood closed with 4029 slow down"

    return await run("slow_down", body)


async def polite_client(fn: Any) -> Verdict:
    """Chapter 04, exercise 4: ``await fn(uri, messages)`` sends each message and waits for its echo; closed
    with 4029 it waits 0.2 s, reconnects and goes on from the message that was not echoed; any other close
    code ends it with the error."""

    async def body(run: Run) -> str:
        require_coroutine_function(fn, "a coroutine function", "send_politely(uri, messages)")
        loop = asyncio.get_running_loop()
        opened: list[float] = []
        closed: list[float] = []

        async def three_per_connection(websocket: Any) -> None:
            """Echo three messages, then close the fourth's sender with 4029 "slow down"."""
            opened.append(loop.time())
            with contextlib.suppress(ConnectionClosed):
                for _ in range(3):
                    await websocket.send(await websocket.recv())
                await websocket.recv()
                await websocket.close(4029, "slow down")
            closed.append(loop.time())

        server = await run.start(three_per_connection, suffix="4029", learner_connects=True)
        messages = [f"m{n}" for n in range(1, 9)]
        try:
            async with asyncio.timeout(3):
                got = await fn(server.uri, messages)
        except TimeoutError:
            raise Fail("stop when every message came back", got=f"no result within 3 s after {len(opened)} connection(s)", expected=messages) from None
        except ConnectionClosed as error:
            raise Fail("on 4029, reconnect instead of raising: catch ConnectionClosedError and read error.rcvd.code", got=f"{type(error).__name__}: {error}", expected=messages) from None
        if got != messages:
            raise Fail("send again the message that the 4029 cut off, then the rest; return the echoes in order", sent=messages, got=got, expected=messages)
        pauses = [round(o - c, 2) for c, o in zip(closed, opened[1:], strict=False)]
        if len(opened) != 3 or any(p < 0.15 for p in pauses):
            raise Fail("after a 4029, wait 0.2 s (await asyncio.sleep(0.2)) before you reconnect", got=f"{len(opened)} connections, pauses {pauses} s", expected="3 connections, pauses of 0.2 s")

        async def crash_after_one(websocket: Any) -> None:
            await websocket.send(await websocket.recv())
            await websocket.close(1011, "internal error")

        crashing = await run.start(crash_after_one, suffix="1011", learner_connects=True)
        try:
            async with asyncio.timeout(2):
                await fn(crashing.uri, messages)
        except ConnectionClosedError as error:
            if error.rcvd is None or error.rcvd.code != 1011:
                raise Fail("let other close codes through unchanged (raise the error you caught)", got=str(error), expected="ConnectionClosedError with 1011") from None
        except TimeoutError:
            raise Fail("reconnect only after 4029: re-raise any other ConnectionClosedError", sent="a server that closes with 1011", got="still retrying after 2 s", expected="ConnectionClosedError (1011)") from None
        else:
            raise Fail("a server that closes with 1011 did not answer every message: raise, do not return", sent="a server that closes with 1011", got="a return", expected="ConnectionClosedError (1011)")
        return "8 messages over 3 connections, 0.2 s after each 4029; a 1011 raised"

    return await run("polite_client", body)
