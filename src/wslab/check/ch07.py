"""Checks for chapter 07 (several processes): a Stream follower that misses nothing across a disconnection,
and the window in which a killed process's members leave.

>>> await wslab.check.follow_stream(follow)       # doctest: +SKIP
PASS: follow_stream - 12 entries in order across 3 calls and a new connection; none twice
>>> await wslab.check.ghost_window(ghost_window)  # doctest: +SKIP
PASS: ghost_window - your window is the bus's for ttl 1, 3 and 10 s, and a real kill -9 (--ttl 1) fell inside it
"""

from __future__ import annotations

import inspect
from typing import Any

from .core import TIMEOUT, Fail, Run, Verdict, require_coroutine_function, run

__all__ = ["follow_stream", "ghost_window"]

KEY = "check-stream"


async def follow_stream(follow: Any) -> Verdict:
    """Chapter 07, exercise 1: ``follow(r, key, last)`` returns ``(texts, new_last)``: the ``text`` field of every
    entry of Stream ``key`` after id ``last``, in order. Called again with ``new_last``, even on a new connection
    (as after a disconnection), it returns exactly what was added meanwhile."""

    async def body(state: Run) -> str:
        import redis.asyncio as aioredis

        from .. import services

        require_coroutine_function(follow, "follow", "follow(r, key, last)")
        server = await services.start_redis("check-redis")
        state.cleanups.append(server.stop)
        expected: list[str] = []
        got: list[str] = []
        last = "0-0"
        for part, count in enumerate((5, 0, 7)):  # a batch, nothing new, then a batch after reconnecting
            r = aioredis.from_url(server.url)
            try:
                for n in range(count):
                    text = f"m{len(expected)}"
                    await r.xadd(KEY, {"text": text})
                    expected.append(text)
                answer = await follow(r, KEY, last)
            finally:
                await r.aclose()
            if not (isinstance(answer, tuple) and len(answer) == 2):
                raise Fail("return a pair: (the texts, the id of the last entry you read)", got=repr(answer)[:80], expected="(texts, last_id)")
            texts, last = answer
            texts = [t.decode() if isinstance(t, bytes) else t for t in texts]
            got += texts
            if got != expected:
                hint = ("read from the last id you were given, not from '0-0' or '$': XREAD returns the entries after it"
                        if len(got) > len(expected) else "return every entry after `last`, and the id of the last one as the new `last`")
                raise Fail(hint, sent=f"call {part + 1} with last={last!r}", got=got, expected=expected)
            if isinstance(last, bytes):
                last = last.decode()
        return f"{len(expected)} entries in order across 3 calls and a new connection; none twice"

    return await run("follow_stream", body)


BEAT, REAP = 1 / 3, 1 / 2  # RedisBus beats every ttl / 3 and reaps every ttl / 2 (see its docstring)
MEASURED_TTL = 1.0  # the real kill -9 runs with --ttl 1, so that it takes at most 1.5 s
SLACK = 0.5  # the measured leave may come this much after the window: the reap's own Redis calls, a busy machine


def _window(ttl: float) -> tuple[float, float]:
    """When the leave comes after a kill -9: the key lives ``ttl`` after a beat that was up to ``ttl * BEAT``
    before the kill, and a reaper notices within ``ttl * REAP`` after it expires."""
    return ttl - ttl * BEAT, ttl + ttl * REAP


async def _time_a_ghost(ttl: float) -> float:
    """Start Redis and two chat processes with ``--ttl``, kill -9 the one ghost is on, time bob's ``leave``."""
    import time

    from .. import services
    from ..chat.client import ChatClient

    redis = await services.start_redis("check-ghost-redis")
    chats = []
    try:
        for name in ("check-ghost-a", "check-ghost-b"):
            chats.append(await services.start_chat(name, redis=redis.url, args=["--ttl", f"{ttl:g}"]))
        ghost = await ChatClient.connect(chats[0].uri)
        bob = await ChatClient.connect(chats[1].uri, timeout=ttl * 3)
        try:
            await ghost.join("lobby", "ghost")
            await bob.join("lobby", "bob")
            chats[0].kill()
            killed = time.monotonic()
            while True:
                message = await bob.recv()
                if any(c == {"nick": "ghost", "event": "leave"} for c in message.get("changes", [])):
                    return time.monotonic() - killed
        finally:
            await bob.close()
    finally:
        for service in [*chats, redis]:
            await service.stop()


async def ghost_window(window: Any) -> Verdict:
    """Chapter 07, exercise 2: ``window(ttl)`` returns ``(earliest, latest)``, the seconds after a kill -9
    within which the other processes announce that the dead process's members left. The check compares it
    with RedisBus's beat and reap intervals, then kills a real chat process and times the ``leave``."""

    async def body(state: Run) -> str:
        if not callable(window) or inspect.iscoroutinefunction(window):
            raise Fail("pass a plain function, defined with `def ghost_window(ttl):` (it computes; it waits for nothing)")
        for ttl in (3.0, 1.0, 10.0):
            answer = window(ttl)
            earliest, latest = _window(ttl)
            if not (isinstance(answer, tuple) and len(answer) == 2 and all(isinstance(t, (int, float)) for t in answer)):
                raise Fail("return a pair of numbers: (earliest, latest), in seconds", sent=f"ttl={ttl:g}", got=repr(answer)[:80])
            if abs(answer[1] - latest) > 0.01 * ttl:
                hint = ("the key expires at most ttl after the kill, but someone must notice: a reaper looks every ttl / 2"
                        if abs(answer[1] - ttl) <= 0.01 * ttl else "latest: the key outlives the kill by at most ttl, then wait for the next reap")
                raise Fail(hint, sent=f"ttl={ttl:g}", got=f"latest={answer[1]:g}", expected=f"latest={latest:g}")
            if abs(answer[0] - earliest) > 0.01 * ttl:
                raise Fail("earliest: the last beat may have come up to ttl / 3 before the kill, and a reap may come at once",
                           sent=f"ttl={ttl:g}", got=f"earliest={answer[0]:g}", expected=f"earliest={earliest:.3g}")
        earliest, latest = window(MEASURED_TTL)
        measured = await _time_a_ghost(MEASURED_TTL)
        if not earliest - 0.05 <= measured <= latest + SLACK:
            raise Fail("the bus did not keep its own promise: run it again; if it fails again, report it",
                       sent=f"kill -9 with --ttl {MEASURED_TTL:g}", got=f"leave after {measured:.2f} s",
                       expected=f"between {earliest:.2f} and {latest:.2f} s")
        return f"your window is the bus's for ttl 1, 3 and 10 s, and a real kill -9 (--ttl {MEASURED_TTL:g}) fell inside it"

    return await run("ghost_window", body, timeout=TIMEOUT + 5)  # it starts three processes
