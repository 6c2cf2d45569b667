"""The chat protocol, version 1: validate what a client sends, build what the server sends.

Every message is a JSON object with ``"v": 1`` and a ``"type"``. See PROTOCOL.md beside this file.

>>> parse_client('{"v": 1, "type": "say", "text": "hi"}')
{'v': 1, 'type': 'say', 'text': 'hi'}
>>> parse_client('{"v": 1, "type": "shout"}')
Traceback (most recent call last):
...
wslab.chat.protocol.ChatError: unknown type 'shout': use one of join, say, leave, ping
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from ..messages import _NAMES as _JSON_NAMES
from ..messages import MessageError, _json_type, parse_message

__all__ = [
    "CLIENT_TYPES",
    "LIMITS",
    "VERSION",
    "ChatError",
    "describe",
    "encode",
    "nick_key",
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
    "ping": {},  # answered with "pong": how a browser, which cannot send WebSocket pings, knows the server is there
}

# Unicode categories refused in every field: controls (Cc), format characters such as zero-width
# spaces and bidi overrides (Cf), lone surrogates (Cs: no UTF-8 text can carry them back), private
# use (Co: means nothing to anyone else), unassigned code points (Cn) and line/paragraph separators.
_REFUSED = {"Cc": "control characters", "Cf": "invisible format characters (zero-width or bidi controls)",
            "Cs": "lone surrogates (not text)", "Co": "private-use characters", "Cn": "unassigned code points",
            "Zl": "line separators", "Zp": "paragraph separators"}


class ChatError(MessageError):
    """A message the chat server refuses: ``code`` for programs, ``str(exc)`` for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def reply(self) -> str:
        """The error as the JSON message sent back to the client."""
        return encode({"type": "error", "code": self.code, "error": str(self)})


def encode(message: dict[str, Any]) -> str:
    """Add the version field and encode ``message`` as JSON text that can always be sent.

    Text stays readable (``ensure_ascii=False``); should a string that UTF-8 cannot carry (a lone
    surrogate) ever reach this point, it is escaped (``\\ud800``) instead of failing the send.

    >>> encode({"type": "error", "code": "bad-json", "error": "..."})
    '{"v": 1, "type": "error", "code": "bad-json", "error": "..."}'
    >>> encode({"type": "x", "text": "\\ud800"})
    '{"v": 1, "type": "x", "text": "\\\\ud800"}'
    """
    return encode_bytes(message).decode()


def encode_bytes(message: dict[str, Any]) -> bytes:
    """:func:`encode`, as the UTF-8 bytes that go into a text frame (what the server broadcasts)."""
    message = {"v": VERSION, **message}
    try:
        return json.dumps(message, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(message).encode()


def parse_client(data: str | bytes, types: dict[str, dict[str, type]] = CLIENT_TYPES) -> dict[str, Any]:
    """Check one message from a client and return it as a dict; raise :class:`ChatError` if it is unusable.

    ``types`` maps each accepted type to its required fields. The JSON is parsed once. Strings are
    stripped of surrounding whitespace and put in Unicode NFC form. Extra fields are ignored.
    """
    if isinstance(data, bytes):
        raise ChatError("binary", "expected a text message with JSON, got binary data")
    try:
        message = parse_message(data, {})  # refuses deep nesting, huge numbers, NaN, lone surrogates
    except MessageError as exc:
        code = "not-object" if str(exc).startswith("expected a JSON object") else "bad-json"
        raise ChatError(code, str(exc)) from None
    version = message.get("v")
    if "v" not in message:
        raise ChatError("bad-version", f"missing field 'v': add \"v\": {VERSION}, the protocol version")
    if type(version) is not int or version != VERSION:
        raise ChatError("bad-version", f"unsupported version {_short(version)}: this server speaks version {VERSION}")
    kind = _field(message, "type", str, "")
    if kind not in types:
        raise ChatError("unknown-type", f"unknown type {kind[:40]!r}: use one of {', '.join(types)}")
    for name, kind_of_field in types[kind].items():
        value = _field(message, name, kind_of_field, f"{kind}: ")
        if kind_of_field is str:
            message[name] = checked_text(name, value)
    return message


def _field(message: dict[str, Any], name: str, kind: type, context: str) -> Any:
    if name not in message:
        raise ChatError("bad-field", f"{context}missing field {name!r}")
    value = message[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ChatError("bad-field", f"{context}field {name!r} must be {_JSON_NAMES.get(kind, kind.__name__)}, got {_json_type(value)}")
    return value


def checked_text(field: str, value: str) -> str:
    """``value`` stripped and in NFC form, if it is fit to show to others as ``field``; else :class:`ChatError`.

    Every field refuses the categories in ``_REFUSED`` (the page and ``describe()`` show one message
    per line, and nobody can tell ``ada`` from ``ada`` + a zero-width space), except the zero-width
    joiner of emoji in texts. The limit is ``LIMITS[field]``
    (``LIMITS["text"]`` for fields a subclass adds).

    >>> checked_text("nick", " ada ")
    'ada'
    >>> checked_text("nick", "ada\\u200b")
    Traceback (most recent call last):
    ...
    wslab.chat.protocol.ChatError: field 'nick' contains invisible format characters (zero-width or bidi controls): U+200B
    """
    value = unicodedata.normalize("NFC", value.strip())
    if not value:
        raise ChatError("bad-field", f"field {field!r} is empty")
    limit = LIMITS.get(field, LIMITS["text"])
    if len(value) > limit:
        raise ChatError("too-long", f"field {field!r} is {len(value)} characters long; the limit is {limit}")
    joiner = "\u200d" if field == "text" else ""  # zero-width joiner: builds emoji such as 👩‍💻
    for char in value:
        category = unicodedata.category(char)
        if category in _REFUSED and char != joiner:
            raise ChatError("bad-field", f"field {field!r} contains {_REFUSED[category]}: U+{ord(char):04X}")
    return value


def nick_key(nick: str) -> str:
    """What makes two nicknames the same person to a reader: ``Ada``, ``ada`` and ``ａｄａ`` collide.

    >>> nick_key("Ａda") == nick_key("ada")
    True
    """
    return unicodedata.normalize("NFKC", nick).casefold()


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, int) or abs(value) < 10**40 else "(a huge number)"
    return text if len(text) <= 40 else text[:37] + "..."


def describe(message: dict[str, Any]) -> str:
    """One line for a person reading a server message, as the browser page shows it.

    >>> describe({"v": 1, "type": "message", "room": "lobby", "nick": "ada", "text": "hi", "seq": 1})
    '[lobby] ada: hi'
    """
    kind = message.get("type")
    room = message.get("room")
    if kind == "message":
        return f"[{room}] {message['nick']}: {message['text']}"
    if kind == "whisper":
        return f"[{room}] {message['nick']} → {message['to']} (private): {message['text']}"
    if kind == "presence":
        changes = ", ".join(f"{c['nick']} {'joined' if c['event'] == 'join' else 'left'}" for c in message["changes"])
        return f"[{room}] * {changes}; {message['count']} here"
    if kind == "joined":
        lines = [f"[{room}] you are {message['nick']}; here: {', '.join(message['members'])}"]
        lines += [f"[{room}] (history) {m['nick']}: {m['text']}" for m in message["history"]]
        return "\n".join(lines)
    if kind == "left":
        return f"[{room}] you left"
    if kind == "error":
        return f"error {message['code']}: {message['error']}"
    if kind == "closing":
        return f"closing {message['code']}: {message['reason']}"
    if kind == "hello":
        auth = "; send auth first" if message.get("auth") else ""
        return f"hello: protocol version {message['v']}, limits {message['limits']}{auth}"
    if kind == "authenticated":
        return "authenticated"
    if kind == "pong":
        return "pong"
    return json.dumps(message)
