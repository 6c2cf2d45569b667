"""Chapter 04's checks: a handler that answers right but ends with an error is not a PASS; the polite client's check."""

from __future__ import annotations

import asyncio
import contextlib

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from wslab import RateLimit, check

from .test_check import expect_fail, expect_pass


def limited(drain_quietly: bool):  # type: ignore[no-untyped-def]
    """A 4029 rate limit that drains the flood while it closes, with or without catching the final close."""

    async def strictly_limited(connection, limit):  # type: ignore[no-untyped-def]
        async for message in connection:
            if not limit.allow():
                closing = asyncio.create_task(connection.close(4029, "slow down"))
                if drain_quietly:
                    with contextlib.suppress(ConnectionClosed):
                        async for _ in connection:
                            pass
                else:  # ends with ConnectionClosedError: 4029 is not a "nothing went wrong" code
                    async for _ in connection:
                        pass
                await closing
                return
            yield message

    async def slow_echo(websocket):  # type: ignore[no-untyped-def]
        async for message in strictly_limited(websocket, RateLimit(per_second=5, burst=10)):
            await websocket.send(message)

    return slow_echo


async def test_slow_down_passes_a_handler_that_ends_cleanly(capsys) -> None:  # type: ignore[no-untyped-def]
    await expect_pass(check.slow_down(limited(drain_quietly=True)), capsys)


async def test_slow_down_fails_a_drain_that_raises_and_says_why(capsys) -> None:  # type: ignore[no-untyped-def]
    await expect_fail(
        check.slow_down(limited(drain_quietly=False)),
        capsys,
        "server: connection handler failed: ConnectionClosedError",
        "`async for` ends quietly only on 1000, 1001 and 1005",
        "contextlib.suppress(ConnectionClosed)",
    )


def polite(pause: float, retry_any_close: bool = False):  # type: ignore[no-untyped-def]
    """A client that resends after 4029 (after ``pause`` seconds), and lets other close codes through unless told."""

    async def send_politely(uri, messages):  # type: ignore[no-untyped-def]
        echoes = []
        for _ in range(20):
            if len(echoes) == len(messages):
                break
            try:
                async with connect(uri, proxy=None) as websocket:
                    for message in messages[len(echoes):]:
                        await websocket.send(message)
                        echoes.append(await websocket.recv())
            except ConnectionClosedError as error:
                if not retry_any_close and (error.rcvd is None or error.rcvd.code != 4029):
                    raise
                await asyncio.sleep(pause)
        return echoes

    return send_politely


async def impatient(uri, messages):  # type: ignore[no-untyped-def]
    """Gives up at the first 4029."""
    async with connect(uri) as websocket:
        echoes = []
        for message in messages:
            await websocket.send(message)
            echoes.append(await websocket.recv())
        return echoes


async def test_polite_client_passes_a_pause_and_fails_the_usual_mistakes(capsys) -> None:  # type: ignore[no-untyped-def]
    await expect_pass(check.polite_client(polite(0.2)), capsys)
    await expect_fail(check.polite_client(polite(0)), capsys, "wait 0.2 s", "3 connections, pauses")
    await expect_fail(check.polite_client(polite(0.2, retry_any_close=True)), capsys, "did not answer every message: raise", "a return")
    await expect_fail(check.polite_client(impatient), capsys, "on 4029, reconnect instead of raising", "4029")
