"""Checks for chapter 03 (client): reading, reconnecting and resuming."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from typing import Any

from websockets.exceptions import ConnectionClosed

from .core import Fail, Run, Verdict, loopback_connect, recv, require_coroutine_function, run

__all__ = ["first_five", "follow", "give_up_after", "resume"]


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

    async def body(run: Run) -> str:
        require_coroutine_function(fn, "a coroutine function", "first_five(uri)")
        server = await run.start(_ticker, learner_connects=True)
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

    return await run("first_five", body)


def _quick_delays() -> Iterator[float]:
    """Reconnection delays for the check: 0.01 s every time, so that a check takes milliseconds."""
    while True:
        yield 0.01


async def give_up_after(factory: Any) -> Verdict:
    """Chapter 03, exercise 2: ``factory(n)`` returns a ``process_exception`` that retries ``n`` times, then
    returns the error, so that ``async for websocket in connect(...)`` ends."""

    async def body(run: Run) -> str:
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
                async for _ in loopback_connect(stopped.uri, reconnect_delays=_quick_delays, process_exception=counting, open_timeout=1):
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

    return await run("give_up_after", body)


def _number(message: Any) -> int | None:
    found = re.findall(r"\d+", message) if isinstance(message, str) else []
    return int(found[-1]) if found else None


async def resume(handler: Any) -> Verdict:
    """Chapter 03, exercise 3: ``handler`` reads the number of the last message the client saw ("0" at
    first) and sends the next numbers, 1 past it and onwards; the check restarts the server in between."""

    async def body(run: Run) -> str:
        server = await run.start(handler)
        port = server.port
        for last, count in ((0, 3), (3, 2)):
            if last:
                await server.stop(close_timeout=0.5)
                server = await run.start(handler, port=port)
            expected = list(range(last + 1, last + 1 + count))
            async with loopback_connect(server.uri) as ws:
                await ws.send(str(last))
                got = []
                for _ in expected:
                    message = await recv(ws, "the client", repr(str(last)), expected, "after reading the client's number, send the numbers that follow it")
                    got.append(_number(message))
                    if got[-1] is None:
                        raise Fail("put the number in each message, e.g. str(n)", sent=repr(str(last)), got=repr(message), expected=expected)
            if got != expected:
                hint = "start from int(the client's number) + 1" if last else "number the messages 1, 2, 3, ..."
                raise Fail(hint, sent=repr(str(last)) + (" after a restart" if last else ""), got=got, expected=expected)
        return "1, 2, 3; restarted; resumed with 4, 5"

    return await run("resume", body)


async def follow(fn: Any, wanted: int = 7) -> Verdict:
    """Chapter 03, exercise 4: ``await fn(uri, wanted)`` is a reconnecting client that resumes after every
    dropped connection and returns the first ``wanted`` numbers, 1, 2, 3, ..."""

    async def body(run: Run) -> str:
        require_coroutine_function(fn, "a coroutine function", "follow(uri, wanted)")
        resumed_from: list[str] = []

        async def dropping(websocket: Any) -> None:
            """Three numbers after the client's last one, then a dropped TCP connection (the client sees 1006)."""
            last = await websocket.recv()
            resumed_from.append(last)
            start = int(last) + 1 if last.isdigit() else 1
            for n in range(start, start + 3):
                await websocket.send(str(n))
            websocket.transport.abort()

        server = await run.start(dropping, learner_connects=True)
        expected = list(range(1, wanted + 1))
        try:
            async with asyncio.timeout(3):
                got = await fn(server.uri, wanted)
        except TimeoutError:
            raise Fail(
                "return as soon as you have `wanted` numbers; reconnect at once after a drop (the reconnect loop "
                "waits only after a failed attempt)",
                got=f"no result within 3 s; the client resumed from {resumed_from}", expected=expected,
            ) from None
        except ConnectionClosed as closed:
            raise Fail(
                "catch ConnectionClosed inside `async for websocket in connect(uri):` and `continue`: an exception "
                "in the loop's body leaves the loop", got=f"{type(closed).__name__}: {closed}", expected=expected,
            ) from None
        if got != expected:
            raise Fail("collect every number once, in order, and return the list", got=got, expected=expected)
        wanted_from = [str(n) for n in range(0, wanted, 3)]
        if resumed_from != wanted_from:
            raise Fail(
                "after each reconnect, send the last number you received (\"0\" the first time)",
                got=f"the client resumed from {resumed_from}", expected=f"resumed from {wanted_from}",
            )
        drops = len(resumed_from) - 1
        return f"dropped {drops} time{'s' if drops != 1 else ''}, resumed from {', '.join(resumed_from)}, got 1 to {wanted}"

    return await run("follow", body)
