"""Checks for chapter 05 (chat): the learner's ChatServer subclass with a new message type or a new guard.

>>> await wslab.check.who(WhoChat)     # doctest: +SKIP
PASS: who - 'who' answers the sender with the room's members, and not-joined before a join
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ..chat.client import ChatClient
from ..chat.server import ChatServer
from .core import Fail, Run, Verdict, run

__all__ = ["no_disguise", "typing", "who", "whisper"]

QUIET = 0.3  # how long a client that must receive nothing is watched, in seconds


async def _chat(run: Run, cls: Any) -> ChatServer:
    if not (isinstance(cls, type) and issubclass(cls, ChatServer)):
        raise Fail(f"pass your ChatServer subclass itself, `class MyChat(ChatServer): ...` (got {cls!r})")
    chat = cls()
    chat.server = await run.start(chat.handler, process_request=chat.process_request)
    return chat


async def _members(run: Run, chat: ChatServer, *nicks: str) -> list[ChatClient]:
    """Clients that joined "lobby" under ``nicks``, every presence message already read."""
    clients: list[ChatClient] = []
    for nick in nicks:
        client = await ChatClient.connect(chat.ws_uri, timeout=1.0)
        run.cleanups.append(client.close)
        reply = await client.join("lobby", nick)
        if reply.get("type") != "joined":
            raise Fail("keep join working: call super().receive(client, message) for the types you do not handle", got=reply)
        for other in clients:
            await _news(other, 1)
        clients.append(client)
    return clients


async def _news(client: ChatClient, n: int) -> None:
    """Read presence messages until ``n`` changes have been announced (the server batches them)."""
    while n > 0:
        message = await client.recv()
        if message.get("type") != "presence":
            raise Fail("keep presence working: call super().receive(client, message) for join and leave", got=json.dumps(message))
        n -= len(message.get("changes", []))


async def _next(client: ChatClient, who: str, sent: str, expected: str, hint: str) -> dict[str, Any]:
    try:
        return await client.recv()
    except TimeoutError:
        raise Fail(hint, sent=sent, got=f"{who} got nothing", expected=expected) from None


async def _explain_silence(sender: ChatClient, failure: Fail, kind: str) -> Fail:
    """When nobody got anything, the sender may have got an error: put it in the verdict."""
    try:
        got = await sender.recv()
    except TimeoutError:
        return failure
    if got.get("type") == "error":
        hint = f"add {kind!r} to client_types and handle it in receive()" if got.get("code") == "unknown-type" else failure.lines[-1][6:]
        return Fail(hint, sent=f"a {kind!r} message", got=f"the sender got error {got.get('code')}: {got.get('error')}")
    return failure


async def _nothing_for(client: ChatClient, who: str, sent: str, hint: str) -> None:
    """``client`` receives nothing new: its next message is the marker said afterwards."""
    await asyncio.sleep(QUIET)
    got = await client.recv()
    if got.get("text") != "marker":
        raise Fail(hint, sent=sent, got=f"{who} received {json.dumps(got)}", expected=f"nothing for {who}")


async def who(cls: Any) -> Verdict:
    """Exercise 1: ``{"v": 1, "type": "who"}`` answers the sender with ``members``; ``not-joined`` before a join."""

    async def body(run: Run) -> str:
        chat = await _chat(run, cls)
        ada, bob = await _members(run, chat, "ada", "bob")
        sent = '{"v": 1, "type": "who"}'
        await bob.send(type="who")
        expected = {"v": 1, "type": "members", "room": "lobby", "members": ["ada", "bob"]}
        got = await _next(bob, "bob", sent, json.dumps(expected), "add 'who' to client_types and reply() to the sender in receive()")
        if got.get("code") == "unknown-type":
            raise Fail("add 'who' to client_types and handle it in receive()", sent=sent, got=json.dumps(got))
        if got != expected:
            raise Fail("reply with type 'members', the room and the sorted member names", sent=sent, got=json.dumps(got), expected=json.dumps(expected))
        await bob.say("marker")
        await bob.recv()
        await _nothing_for(ada, "ada", sent, "answer 'who' with reply(), to the sender only, not broadcast()")
        async with ChatClient(chat.ws_uri, timeout=1.0) as newcomer:
            await newcomer.send(type="who")
            got = await _next(newcomer, "a client that has not joined", sent, "error not-joined", "raise ChatError for 'who' before 'join'")
            if got.get("code") != "not-joined":
                raise Fail("before joining, 'who' is refused like 'say': error code not-joined", sent=sent, got=json.dumps(got))
        return "'who' answers the sender with the room's members, and not-joined before a join"

    return await run("who", body)


async def typing(cls: Any) -> Verdict:
    """Exercise 2: ``{"v": 1, "type": "typing"}`` tells the others in the room, not the sender."""

    async def body(run: Run) -> str:
        chat = await _chat(run, cls)
        ada, bob = await _members(run, chat, "ada", "bob")
        sent = '{"v": 1, "type": "typing"}'
        await ada.send(type="typing")
        expected = {"v": 1, "type": "typing", "room": "lobby", "nick": "ada"}
        try:
            got = await _next(bob, "bob", sent, json.dumps(expected), "broadcast a 'typing' message to the room")
        except Fail as failure:
            raise await _explain_silence(ada, failure, "typing") from None
        if got != expected:
            raise Fail("send the others type 'typing' with room and nick", sent=sent, got=json.dumps(got), expected=json.dumps(expected))
        await ada.say("marker")
        got = await ada.recv()
        if got.get("text") != "marker":
            raise Fail("leave the sender out: broadcast(room, message, exclude=client)", sent=sent, got=f"ada received {json.dumps(got)}")
        return "'typing' reaches the others in the room, not the sender"

    return await run("typing", body)


async def whisper(cls: Any) -> Verdict:
    """Exercise 3: ``whisper`` reaches ``to`` and the sender only, as its own type; an unknown ``to`` is an error."""

    async def body(run: Run) -> str:
        chat = await _chat(run, cls)
        ada, bob, cleo = await _members(run, chat, "ada", "bob", "cleo")
        sent = '{"v": 1, "type": "whisper", "to": "bob", "text": "psst"}'
        await ada.send(type="whisper", to="bob", text="psst")
        expected = {"v": 1, "type": "whisper", "room": "lobby", "nick": "ada", "to": "bob", "text": "psst"}
        for client, name in ((bob, "bob"), (ada, "ada")):
            try:
                got = await _next(client, name, sent, json.dumps(expected), "reply() to the sender and to the member named 'to'")
            except Fail as failure:
                raise await _explain_silence(ada, failure, "whisper") from None
            if {k: got.get(k) for k in expected} != expected:
                raise Fail("send type 'whisper' (not 'message': a page that knows no whispers would show it as public) with room, nick, to and text", sent=sent, got=f"{name} received {json.dumps(got)}", expected=json.dumps(expected))
        await ada.say("marker")
        await ada.recv()
        await bob.recv()
        await _nothing_for(cleo, "cleo", sent, "a whisper must not reach the rest of the room")
        await ada.send(type="whisper", to="nobody", text="hello?")
        got = await _next(ada, "ada", "a whisper to 'nobody'", "an error", "raise ChatError when no member has that nickname")
        if got.get("type") != "error":
            raise Fail("a whisper to a nickname not in the room gets an error", sent="a whisper to 'nobody'", got=json.dumps(got))
        return "whispers reach their recipient and the sender only; an unknown recipient gets an error"

    return await run("whisper", body)


# Nicknames that pass the chat's own checks but pose as someone else, and nicknames that must still work.
DISGUISES = {"\u0430da": "Cyrillic a, Latin da", "b\u03bfb": "Latin b, Greek omicron, Latin b", "\u0440oot": "Cyrillic r, Latin oot"}
HONEST = ["ada", "Zoë", "\u0417\u043e\u044f", "\u674e\u767d", "r2-d2"]


async def no_disguise(cls: Any) -> Verdict:
    """Exercise 4: a nickname that mixes scripts (Cyrillic ``а`` in ``аda``) is refused with ``bad-field``."""

    async def body(run: Run) -> str:
        chat = await _chat(run, cls)
        (ada,) = await _members(run, chat, "ada")
        mallory = await ChatClient.connect(chat.ws_uri, timeout=1.0)
        run.cleanups.append(mallory.close)
        for nick, what in DISGUISES.items():
            sent = json.dumps({"v": 1, "type": "join", "room": "lobby", "nick": nick})
            await mallory.send(type="join", room="lobby", nick=nick)
            got = await _next(mallory, "the impostor", sent, "error bad-field", "answer every join, with joined or an error")
            if got.get("type") != "error" or got.get("code") != "bad-field":
                raise Fail(f"refuse a nickname that mixes scripts ({what}) with ChatError('bad-field', ...)", sent=sent, got=json.dumps(got), expected="error bad-field")
        for n, nick in enumerate(HONEST):
            async with ChatClient(chat.ws_uri, timeout=1.0) as honest:
                sent = json.dumps({"v": 1, "type": "join", "room": f"room{n}", "nick": nick})
                await honest.send(type="join", room=f"room{n}", nick=nick)
                got = await _next(honest, "an honest client", sent, "joined", "keep join working for the other nicknames")
                if got.get("type") != "joined":
                    raise Fail("a nickname in one script (and digits, '-', '_') must still be accepted", sent=sent, got=json.dumps(got), expected="joined")
        await ada.say("marker")
        got = await ada.recv()
        if got.get("text") != "marker":
            raise Fail("a refused join must reach nobody: raise ChatError before super().receive()", sent="joins with disguised nicknames", got=f"ada received {json.dumps(got)}")
        return "nicknames that mix scripts are refused with bad-field; one-script nicknames still join"

    return await run("no_disguise", body)
