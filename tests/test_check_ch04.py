"""Chapter 04's checks: a handler that answers right but ends with an error is not a PASS."""

from __future__ import annotations

import asyncio
import contextlib

from websockets.exceptions import ConnectionClosed

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
