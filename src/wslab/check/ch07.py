"""Checks for chapter 07 (several processes): a Stream follower that misses nothing across a disconnection.

>>> await wslab.check.follow_stream(follow)       # doctest: +SKIP
PASS: follow_stream - 12 entries in order across 3 calls and a new connection; none twice
"""

from __future__ import annotations

from typing import Any

from .core import Fail, Run, Verdict, require_coroutine_function, run

__all__ = ["follow_stream"]

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
