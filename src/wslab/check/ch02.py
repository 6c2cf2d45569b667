"""Checks for chapter 02 (server): the chapter's ChatServer with names, a /rooms endpoint and announcements."""

from __future__ import annotations

import json
from typing import Any


from ..http import http_get
from ..servers import BackgroundServer
from .core import Fail, Run, Verdict, loopback_connect, recv, run

__all__ = ["names", "rooms_endpoint", "announcements"]


async def _chat(run: Run, cls: Any) -> BackgroundServer:
    if not isinstance(cls, type):
        raise Fail("pass the class itself (a subclass of ChatServer), not an instance", got=type(cls).__name__)
    app = cls()
    return await run.start(app.handler, process_request=app.process_request)


async def _said(ws: Any, who: str, text: str) -> dict[str, Any]:
    """Say ``text`` and wait for the room's answer to come back to ``ws``."""
    sent = {"type": "say", "text": text}
    await ws.send(json.dumps(sent))
    while True:
        got = json.loads(await recv(ws, who, sent, "a 'said' message", "publish every 'say' to the room"))
        if got.get("type") == "said" and got.get("text") == text:
            return got


async def names(cls: Any) -> Verdict:
    """Chapter 02, exercise 1: ``cls()`` is a ChatServer whose "said" messages carry "from" (the ``name``
    in the query string, or "anonymous")."""

    async def body(run: Run) -> str:
        server = await _chat(run, cls)
        async with (
            loopback_connect(server.uri + "/room/lobby?name=ada") as ada,
            loopback_connect(server.uri + "/room/lobby") as anon,
        ):
            for ws, who, name in ((ada, "ada", "ada"), (anon, "a client without a name", "anonymous")):
                got = await _said(ws, who, f"hi from {name}")
                expected = {"type": "said", "room": "lobby", "text": f"hi from {name}", "from": name}
                if got != expected:
                    hint = "add \"from\": the name in the query string (urllib.parse.parse_qs), or \"anonymous\""
                    if got.get("room") != "lobby":
                        hint = "the room is the path without the query string: keep room_of()"
                    raise Fail(hint, sent=f"{who} said 'hi from {name}'", got=got, expected=expected)
        return "ada's messages come from 'ada', the others' from 'anonymous'"

    return await run("names", body)


async def rooms_endpoint(cls: Any) -> Verdict:
    """Chapter 02, exercise 2: ``cls()`` answers ``GET /rooms`` with a JSON object room -> members."""

    async def body(run: Run) -> str:
        server = await _chat(run, cls)
        async with (
            loopback_connect(server.uri + "/room/lobby") as a,
            loopback_connect(server.uri + "/room/lobby") as b,
            loopback_connect(server.uri + "/room/kitchen") as c,
        ):
            for ws, who in ((a, "client a"), (b, "client b"), (c, "client c")):
                await _said(ws, who, "here")  # each one is in its room now
            answer = await http_get(server.uri + "/rooms")
        expected = {"lobby": 2, "kitchen": 1}
        if answer.status != 200:
            got = f"{answer.status} {answer.reason}"
            raise Fail("answer connection.respond(HTTPStatus.OK, json.dumps(...)) for /rooms", sent="GET /rooms", got=got, expected="200 OK")
        types = answer.headers.get_all("Content-Type")
        if types != ["application/json"]:
            raise Fail(
                "del response.headers['Content-Type'] before setting it, or it is sent twice",
                sent="GET /rooms", got=f"Content-Type headers: {types}", expected="['application/json']",
            )
        try:
            rooms = json.loads(answer.body)
        except ValueError:
            raise Fail("the body must be JSON: json.dumps(...)", sent="GET /rooms", got=answer.body[:80], expected=expected) from None
        if rooms != expected:
            raise Fail("map each room to len(members)", sent="GET /rooms with 2 clients in lobby, 1 in kitchen", got=rooms, expected=expected)
        return "GET /rooms -> 200, application/json once, {'lobby': 2, 'kitchen': 1}"

    return await run("rooms_endpoint", body)


async def announcements(cls: Any) -> Verdict:
    """Chapter 02, exercise 3: ``cls()`` publishes {"type": "joined"} and {"type": "left"} to the room."""

    async def body(run: Run) -> str:
        server = await _chat(run, cls)
        async with loopback_connect(server.uri + "/room/lobby") as ada:
            await _said(ada, "ada", "anyone?")  # skips ada's own "joined", if any
            for event, step in (("joined", "bob joined"), ("left", "bob left")):
                if event == "joined":
                    bob = await loopback_connect(server.uri + "/room/lobby")
                    run.cleanups.append(bob.close)
                else:
                    await bob.close()
                expected = {"type": event, "room": "lobby"}
                got = json.loads(await recv(ada, "ada", step, expected, f"publish {expected} to the room when a client {event.replace('joined', 'joins').replace('left', 'leaves')}"))
                if {k: got.get(k) for k in expected} != expected:
                    raise Fail(f"publish {expected} when a client {'enters' if event == 'joined' else 'leaves'}", sent=step, got=got, expected=expected)
        return "ada saw bob join and leave"

    return await run("announcements", body)
