"""The chat protocol, version 1: validate what a client sends, build what the server sends.

Every message is a JSON object with ``"v": 1`` and a ``"type"``. See PROTOCOL.md beside this file.

>>> parse_client('{"v": 1, "type": "say", "text": "hi"}')
{'v': 1, 'type': 'say', 'text': 'hi'}
>>> parse_client('{"v": 1, "type": "shout"}')
Traceback (most recent call last):
...
wslab.chat.protocol.ChatError: unknown type 'shout': use one of join, say, leave
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from ..messages import MessageError, parse_message

__all__ = [
    "CLIENT_TYPES",
    "LIMITS",
    "VERSION",
    "ChatError",
    "describe",
    "encode",
    "parse_client",
]

VERSION = 1

# Longest nickname, room name and text, in characters.
LIMITS: dict[str, int] = {"nick": 24, "room": 32, "text": 500}

# The fields each client message type needs, with their JSON types.
CLIENT_TYPES: dict[str, dict[str, type]] = {
    "join": {"room": str, "nick": str},
    "say": {"text": str},
    "leave": {},
}


class ChatError(MessageError):
    """A message the chat server refuses: ``code`` for programs, ``str(exc)`` for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def reply(self) -> str:
        """The error as the JSON message sent back to the client."""
        return encode({"type": "error", "code": self.code, "error": str(self)})


def encode(message: dict[str, Any]) -> str:
    """Add the version field and encode ``message`` as JSON text.

    >>> encode({"type": "error", "code": "bad-json", "error": "..."})
    '{"v": 1, "type": "error", "code": "bad-json", "error": "..."}'
    """
    return json.dumps({"v": VERSION, **message}, ensure_ascii=False)


def parse_client(data: str | bytes, types: dict[str, dict[str, type]] = CLIENT_TYPES) -> dict[str, Any]:
    """Check one message from a client and return it as a dict; raise :class:`ChatError` if it is unusable.

    ``types`` maps each accepted type to its required fields. Text and names are stripped
    of surrounding whitespace. Extra fields are ignored.
    """
    if isinstance(data, bytes):
        raise ChatError("binary", "expected a text message with JSON, got binary data")
    try:
        message = parse_message(data, {})
    except MessageError as exc:
        code = "not-object" if str(exc).startswith("expected a JSON object") else "bad-json"
        raise ChatError(code, str(exc)) from None
    if "v" not in message:
        raise ChatError("bad-version", f"missing field 'v': add \"v\": {VERSION}, the protocol version")
    if message["v"] != VERSION or isinstance(message["v"], bool):
        raise ChatError("bad-version", f"unsupported version {json.dumps(message['v'])}: this server speaks version {VERSION}")
    try:
        parse_message(data, {"type": str})
    except MessageError as exc:
        raise ChatError("bad-field", str(exc)) from None
    kind = message["type"]
    if kind not in types:
        raise ChatError("unknown-type", f"unknown type {kind[:40]!r}: use one of {', '.join(types)}")
    try:
        parse_message(data, types[kind])
    except MessageError as exc:
        raise ChatError("bad-field", f"{kind}: {exc}") from None
    for field, kind_of_field in types[kind].items():
        if kind_of_field is str:
            message[field] = _checked(field, message[field])
    return message


def _checked(field: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise ChatError("bad-field", f"field {field!r} is empty")
    limit = LIMITS.get(field, LIMITS["text"])
    if len(value) > limit:
        raise ChatError("too-long", f"field {field!r} is {len(value)} characters long; the limit is {limit}")
    allowed_controls = "\n" if field == "text" else ""
    if any(unicodedata.category(c) == "Cc" and c not in allowed_controls for c in value):
        raise ChatError("bad-field", f"field {field!r} contains control characters")
    return value


def describe(message: dict[str, Any]) -> str:
    """One line for a person reading a server message, as the browser page shows it.

    >>> describe({"v": 1, "type": "message", "room": "lobby", "nick": "ada", "text": "hi", "seq": 1})
    '[lobby] ada: hi'
    """
    kind = message.get("type")
    if kind == "message":
        return f"[{message['room']}] {message['nick']}: {message['text']}"
    if kind == "presence":
        verb = "joined" if message["event"] == "join" else "left"
        return f"[{message['room']}] * {message['nick']} {verb}; here: {', '.join(message['members'])}"
    if kind == "joined":
        lines = [f"[{message['room']}] you are {message['nick']}; here: {', '.join(message['members'])}"]
        lines += [f"[{message['room']}] (history) {m['nick']}: {m['text']}" for m in message["history"]]
        return "\n".join(lines)
    if kind == "left":
        return f"[{message['room']}] you left"
    if kind == "error":
        return f"error {message['code']}: {message['error']}"
    if kind == "hello":
        return f"hello: protocol version {message['v']}, limits {message['limits']}"
    return json.dumps(message)
