"""Checks for chapter 04 (advanced): keepalive, an authentication deadline and a rate limit."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidHandshake

from .core import Fail, Run, Verdict, recv, require_coroutine_function, run

__all__ = ["silent_server", "auth_deadline", "slow_down"]


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

    return await run("silent_server", body)


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

    async def body(run: Run) -> str:
        server = await run.start(handler)
        async with connect(server.uri) as ws:
            for token, answer in (("s3cret", "welcome"),):
                await ws.send(token)
                got = await recv(ws, "the client", repr(token), repr(answer), "keep the chapter's check of the token")
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

    return await run("auth_deadline", body)


async def slow_down(handler: Any) -> Verdict:
    """Chapter 04, exercise 3: ``handler`` echoes at a normal pace, closes a flooding client with
    4029 "slow down", and ends without an error."""

    async def body(run: Run) -> str:
        server = await run.start(handler)
        async with connect(server.uri) as ws:
            for n in range(3):
                await ws.send(f"hello {n}")
                got = await recv(ws, "the client", f"'hello {n}'", f"'hello {n}'", "echo messages that come at a normal pace")
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
