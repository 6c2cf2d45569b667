"""The one-line checks of chapter 05's exercises: PASS for a right answer, FAIL with a hint for the stub."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest

from wslab import check as checks
from wslab.chat import CLIENT_TYPES, ChatError, ChatServer
from wslab.chat.server import Client
from wslab.check.ch05 import no_disguise


class WhoChat(ChatServer):
    client_types = {**CLIENT_TYPES, "who": {}}

    def receive(self, client: Client, message: dict[str, Any]) -> None:
        if message["type"] != "who":
            return super().receive(client, message)
        if client.room is None:
            raise ChatError("not-joined", "join a room first")
        self.reply(client, {"type": "members", "room": client.room, "members": sorted(self.rooms[client.room].members)})


class TypingChat(ChatServer):
    client_types = {**CLIENT_TYPES, "typing": {}}

    def receive(self, client: Client, message: dict[str, Any]) -> None:
        if message["type"] != "typing":
            return super().receive(client, message)
        if client.room is None:
            raise ChatError("not-joined", "join a room first")
        self.broadcast(client.room, {"type": "typing", "room": client.room, "nick": client.nick}, exclude=client)


class WhisperChat(ChatServer):
    client_types = {**CLIENT_TYPES, "whisper": {"to": str, "text": str}}

    def receive(self, client: Client, message: dict[str, Any]) -> None:
        if message["type"] != "whisper":
            return super().receive(client, message)
        if client.room is None:
            raise ChatError("not-joined", "join a room first")
        target = self.rooms[client.room].members.get(message["to"])
        if target is None:
            raise ChatError("no-such-nick", f"nobody called {message['to']!r} here")
        private = {"type": "whisper", "room": client.room, "nick": client.nick, "to": target.nick, "text": message["text"]}
        for member in {target, client}:
            self.reply(member, private)


class NoDisguiseChat(ChatServer):
    def receive(self, client: Client, message: dict[str, Any]) -> None:
        if message["type"] == "join":
            scripts = {unicodedata.name(c).split()[0] for c in message["nick"] if c.isalpha()}
            if len(scripts) > 1:
                raise ChatError("bad-field", f"nickname mixes scripts: {', '.join(sorted(scripts))}")
        super().receive(client, message)


class MessageWhisperChat(WhisperChat):
    """A wrong answer: the whisper reuses type "message", which a page without whispers shows as public."""

    def reply(self, client: Client, message: dict[str, Any]) -> None:
        super().reply(client, {**message, "type": "message"} if message.get("type") == "whisper" else message)


class LoudWhisperChat(WhisperChat):
    """A wrong answer: the whisper goes to the whole room."""

    def receive(self, client: Client, message: dict[str, Any]) -> None:
        if message["type"] == "whisper" and client.room is not None:
            self.broadcast(client.room, {"type": "whisper", "room": client.room, "nick": client.nick, "to": message["to"], "text": message["text"]})
        else:
            super().receive(client, message)


@pytest.mark.parametrize(("check", "solution"), [(checks.who, WhoChat), (checks.typing, TypingChat), (checks.whisper, WhisperChat), (no_disguise, NoDisguiseChat)])
async def test_a_right_answer_passes(check: Any, solution: type, capsys: pytest.CaptureFixture[str]) -> None:
    verdict = await check(solution)
    assert verdict, verdict.text
    assert capsys.readouterr().out.startswith("PASS: ")


@pytest.mark.parametrize("check", [checks.who, checks.typing, checks.whisper])
async def test_the_plain_chat_fails_with_a_hint(check: Any, capsys: pytest.CaptureFixture[str]) -> None:
    verdict = await check(ChatServer)
    assert not verdict
    out = capsys.readouterr().out
    assert out.startswith("FAIL: ") and "unknown-type" in out and "hint:" in out


async def test_a_whisper_to_everyone_fails() -> None:
    verdict = await checks.whisper(LoudWhisperChat)
    assert not verdict and "must not reach the rest of the room" in verdict.text


async def test_not_a_chat_server_class_fails() -> None:
    verdict = await checks.who(object)
    assert not verdict and "ChatServer subclass" in verdict.text


async def test_a_whisper_as_a_public_message_type_fails() -> None:
    verdict = await checks.whisper(MessageWhisperChat)
    assert not verdict and "not 'message'" in verdict.text


async def test_the_plain_chat_lets_a_disguised_nick_in_and_fails() -> None:
    verdict = await no_disguise(ChatServer)
    assert not verdict and "mixes scripts" in verdict.text and "Cyrillic" in verdict.text
