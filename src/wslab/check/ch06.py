"""Checks for chapter 06 (testing): a learner's test, a fake server and a percentile function.

A test is checked mutation-style: it must pass against a correct server and fail against each subtly
broken one, since a test that cannot fail catches nothing.

>>> await wslab.check.max_size_test(test_max_size)     # doctest: +SKIP
PASS: max_size_test - passed against the echo server; failed against all 3 broken servers
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import math
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .core import Fail, Run, Verdict, loopback_connect, require_coroutine_function, run

__all__ = ["going_away", "max_size_test", "percentiles"]

BUDGET = 1.0  # the most one run of the learner's test may take, in seconds
QUIET = 0.3  # how long a fake server is watched to do nothing, in seconds
LIMIT = 2**20  # websockets' default max_size


async def _outcome(test: Any, uri: str) -> str | None:
    """Run ``test(uri)`` bounded: None if it passed, else how it failed."""
    try:
        async with asyncio.timeout(BUDGET):
            await test(uri)
    except TimeoutError:
        return "timeout"
    except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
        raise
    except BaseException as error:  # AssertionError, pytest.raises' Failed, anything: the test failed
        return f"{type(error).__name__}: {error}".rstrip(": ")
    return None


# The servers a max_size test runs against: the chapter's echo, then three that each get one thing wrong.


# Each ignores how the learner's client leaves (a failing test leaves its `async with connect` with 1011).


async def _echo(websocket: ServerConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in websocket:
            await websocket.send(message)


async def _answers_and_stays_open(websocket: ServerConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in websocket:
            await websocket.send("too big" if len(message) > LIMIT else message)


async def _closes_with(websocket: ServerConnection, code: int) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in websocket:
            if len(message) > LIMIT:
                await websocket.close(code, "message too big")
                return
            await websocket.send(message)


async def _closes_1011(websocket: ServerConnection) -> None:
    await _closes_with(websocket, 1011)


async def _closes_1000(websocket: ServerConnection) -> None:
    await _closes_with(websocket, 1000)


MUTANTS = [
    (
        _answers_and_stays_open,
        "accepts the 2 MB message, answers 'too big' and stays open",
        "assert that the connection closes: after the big message, recv() must raise ConnectionClosedError "
        "(a test that only sends asserts nothing)",
    ),
    (
        _closes_1011,
        "closes with 1011 (internal error) instead of 1009",
        "check the close code, not only that the connection closed: closed.rcvd.code == 1009",
    ),
    (
        _closes_1000,
        "closes normally with 1000 (OK) instead of 1009",
        "a normal close is not 1009: `async for` and wait_closed() end quietly on 1000, so check the close code",
    ),
]


async def max_size_test(test: Any) -> Verdict:
    """Chapter 06, exercise 1: ``test(uri)`` sends a 2 MB message and fails (raises) unless the server closes
    with 1009; it must pass against an echo server with the default max_size and fail against three broken ones."""

    async def body(run: Run) -> str:
        require_coroutine_function(test, "your test", "test_max_size(uri)")
        good = await run.start(_echo, suffix="echo", learner_connects=True)
        outcome = await _outcome(test, good.uri)
        if outcome == "timeout":
            raise Fail(
                "bound every wait in a test (asyncio.timeout): against a correct server the close comes at once",
                sent="your test, against the chapter's echo server (max_size 1 MiB)",
                got=f"still running after {BUDGET:g} s", expected="the test passes",
            )
        if outcome is not None:
            raise Fail(
                "a test must pass against a correct server: send more than 1 MiB, then catch the "
                "ConnectionClosedError that recv() raises and check closed.rcvd.code == 1009",
                sent="your test, against the chapter's echo server (max_size 1 MiB)",
                got=outcome, expected="the test passes",
            )
        for n, (handler, what, hint) in enumerate(MUTANTS):
            broken = await run.start(handler, suffix=f"broken{n}", max_size=None, learner_connects=True)
            outcome = await _outcome(test, broken.uri)
            if outcome == "timeout":
                raise Fail(
                    "bound every wait in a test (asyncio.timeout(1)): a broken server must make it fail, not hang",
                    sent=f"your test, against a server that {what}",
                    got=f"still running after {BUDGET:g} s", expected="the test fails (AssertionError)",
                )
            if outcome is None:
                raise Fail(hint, sent=f"your test, against a server that {what}", got="the test passed",
                           expected="the test fails (AssertionError)")
        return f"passed against the echo server; failed against all {len(MUTANTS)} broken servers"

    return await run("max_size_test", body)


async def _chapter_first_price(uri: str, symbol: str) -> Any:
    """The chapter's client under test."""
    async with loopback_connect(uri) as ws:
        await ws.send(json.dumps({"subscribe": symbol}))
        async for message in ws:
            update = json.loads(message)
            if update.get("symbol") == symbol:
                return update["price"]
    return None


async def going_away(handler: Any) -> Verdict:
    """Chapter 06, exercise 2: ``handler``, a fake price feed, reads the subscription and then closes with 1001
    without sending a price."""

    async def body(run: Run) -> str:
        require_coroutine_function(handler, "your fake server", "going_away(websocket)")
        server = await run.start(handler)
        subscription = json.dumps({"subscribe": "ACME"})
        async with loopback_connect(server.uri, close_timeout=0.5) as ws:
            try:
                async with asyncio.timeout(QUIET):
                    early = await ws.recv()
                raise Fail("send no price, and nothing else either, before closing", sent="nothing yet",
                           got=repr(early), expected="silence until the client subscribes")
            except TimeoutError:
                pass
            except ConnectionClosed as closed:
                raise Fail("wait for the subscription first: request = await websocket.recv(), then close",
                           sent="nothing yet", got=f"closed before the client subscribed: {closed}",
                           expected="the fake waits for the subscription") from None
            await ws.send(subscription)
            try:
                async with asyncio.timeout(1):
                    message = await ws.recv()
                raise Fail("close without sending any price: that is the situation the test is about",
                           sent=subscription, got=repr(message), expected="a close 1001 (going away), no message")
            except TimeoutError:
                raise Fail("close the connection once the subscription is read: await websocket.close(1001)",
                           sent=subscription, got="no close within 1 s", expected="1001 (going away)") from None
            except ConnectionClosed as closed:
                if closed.rcvd is None or closed.rcvd.code != 1001:
                    raise Fail("close with code 1001: await websocket.close(1001, 'going away')", sent=subscription,
                               got=str(closed), expected="received 1001 (going away)") from None
        async with asyncio.timeout(1):
            price = await _chapter_first_price(server.uri, "ACME")
        return f"closed 1001 (going away) after the subscription, no price; the chapter's first_price returns {price!r}"

    return await run("going_away", body)


def _numbers(result: Any, sent: str) -> dict[str, float]:
    keys = ("p50", "p99", "max")
    if not isinstance(result, dict) or not all(k in result for k in keys):
        raise Fail('return a dict: {"p50": ..., "p99": ..., "max": ...}', sent=sent, got=repr(result),
                   expected="a dict with the keys 'p50', 'p99' and 'max'")
    try:
        return {k: float(result[k]) for k in keys}
    except (TypeError, ValueError):
        raise Fail("each value must be a number", sent=sent, got=repr(result)) from None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


async def percentiles(fn: Any) -> Verdict:
    """Chapter 06, exercise 3: ``fn(samples)`` returns {"p50", "p99", "max"} as ``statistics.quantiles(samples,
    n=100, method="inclusive")`` gives them, leaves ``samples`` unchanged and raises ValueError for fewer than two
    samples."""

    async def body(run: Run) -> str:
        if not callable(fn):
            raise Fail(f"pass your function, defined with `def percentiles(samples):` (got {type(fn).__name__})")

        async def call(samples: list[float]) -> Any:
            result = fn(samples)
            return await result if inspect.isawaitable(result) else result

        shuffled = [float((37 * n) % 101) for n in range(1, 101)]  # 1.0 ... 100.0 in a mixed order
        sent = "the numbers 1 to 100 in a mixed order"
        expected = {"p50": 50.5, "p99": 99.01, "max": 100.0}
        samples = list(shuffled)
        got = _numbers(await call(samples), sent)
        if not _close(got["max"], 100.0):
            raise Fail("max is the largest sample: max(samples)", sent=sent, got=got, expected=expected)
        if _close(got["p50"], 51.49) or _close(got["p50"], 51.51):  # cuts[50], inclusive or not
            raise Fail("quantiles(samples, n=100) returns the 99 cut points p1 ... p99: p50 is cuts[49], p99 cuts[98]",
                       sent=sent, got=got, expected=expected)
        if _close(got["p99"], 100.0):
            raise Fail("p99 is not the maximum: it is cuts[98] of statistics.quantiles(samples, n=100, "
                       "method='inclusive')", sent=sent, got=got, expected=expected)
        if _close(got["p99"], 99.99):
            raise Fail("use method='inclusive': the default 'exclusive' method extrapolates past the samples, so on "
                       "few samples p99 can exceed the maximum", sent=sent, got=got, expected=expected)
        if not (_close(got["p50"], 50.5) and _close(got["p99"], 99.01)):
            raise Fail("compute them as the chapter does: cuts = statistics.quantiles(samples, n=100, "
                       "method='inclusive'), p50 = cuts[49], p99 = cuts[98]", sent=sent, got=got, expected=expected)
        if samples != shuffled:
            raise Fail("leave the caller's list as it was: sorted(samples) makes a sorted copy, samples.sort() "
                       "changes the caller's list", sent=sent, got="the list came back changed", expected="the same list")

        few = [float(n) for n in range(1, 11)]
        sent = "ten round trips: 1 to 10"
        got = _numbers(await call(few), sent)
        expected = {"p50": 5.5, "p99": 9.91, "max": 10.0}
        if got["p99"] > got["max"]:
            raise Fail("a p99 above the maximum is no measurement: use method='inclusive', which stays within the "
                       "samples", sent=sent, got=got, expected=expected)
        if not all(_close(got[k], v) for k, v in expected.items()):
            raise Fail("compute them with statistics.quantiles(samples, n=100, method='inclusive')", sent=sent,
                       got=got, expected=expected)

        tail = [40.0] * 95 + [1000.0] * 5
        sent = "95 round trips of 40 and 5 of 1000"
        got = _numbers(await call(tail), sent)
        expected = {"p50": 40.0, "p99": 1000.0, "max": 1000.0}
        if _close(got["p50"], _mean(tail)):
            raise Fail("p50 is the median, not the mean: the mean hides the slow tail", sent=sent, got=got,
                       expected=expected)
        if not all(_close(got[k], v) for k, v in expected.items()):
            raise Fail("compute them with statistics.quantiles(samples, n=100, method='inclusive')", sent=sent,
                       got=got, expected=expected)

        for too_few in ([], [5.0]):
            try:
                result = await call(too_few)
            except ValueError:
                continue
            except Exception as error:
                raise Fail("raise ValueError when there are fewer than two samples", sent=repr(too_few),
                           got=f"{type(error).__name__}: {error}", expected="ValueError") from None
            raise Fail("raise ValueError when there are fewer than two samples: "
                       "if len(samples) < 2: raise ValueError(...)", sent=repr(too_few), got=repr(result),
                       expected="ValueError")
        return ("p50, p99 and max right for known data (p99 never above the maximum), the list left unchanged, "
                "ValueError for fewer than 2 samples")

    return await run("percentiles", body)


def _mean(samples: list[float]) -> float:
    """The mean, what a p50 must not be."""
    return sum(samples) / len(samples)
