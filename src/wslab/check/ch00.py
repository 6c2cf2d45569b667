"""Checks for chapter 00 (start here): a first handler."""

from __future__ import annotations

import re
from typing import Any


from ..servers import BackgroundServer
from .core import Fail, Run, Verdict, loopback_connect, recv, run

__all__ = ["shout", "shout_count"]


async def shout(handler: Any) -> Verdict:
    """Chapter 00, exercise 1: ``handler`` answers every message in capital letters."""

    async def body(run: Run) -> str:
        server = await run.start(handler)
        async with loopback_connect(server.uri) as ws:
            for text in ("quiet please", "Hello, World"):
                await ws.send(text)
                got = await recv(ws, "the client", repr(text), repr(text.upper()), "send back message.upper()")
                if got != text.upper():
                    hint = "reply with message.upper(), not the message itself" if got == text else "reply with message.upper()"
                    raise Fail(hint, sent=repr(text), got=repr(got), expected=repr(text.upper()))
        return "every message came back in capital letters"

    return await run("shout", body)


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

    async def body(run: Run) -> str:
        server = await run.start(handler)
        for _ in range(2):
            async with loopback_connect(server.uri) as ws:
                for text in ("one", "two"):
                    await ws.send(text)
                    got = await recv(ws, "the client", repr(text), repr(text.upper()), "keep shouting")
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

    return await run("shout_count", body)
