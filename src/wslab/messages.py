"""JSON messages: parse one, check its fields, and explain to the client what was wrong."""

from __future__ import annotations

import json
from typing import Any, Mapping

__all__ = ["MessageError", "parse_message"]

# What each Python type is called in JSON terms, for error messages.
_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "an array",
    dict: "an object",
}


class MessageError(ValueError):
    """A message the server cannot use; ``str(exc)`` says why, ``exc.reply()`` is the JSON to send back."""

    def reply(self) -> str:
        """The error as a JSON message for the client: ``{"type": "error", "error": "..."}``."""
        return json.dumps({"type": "error", "error": str(self)})


def parse_message(data: str | bytes, fields: Mapping[str, type]) -> dict[str, Any]:
    """Parse ``data`` as a JSON object that has every field in ``fields`` with the right type.

    Extra fields are allowed. ``float`` accepts integers too; ``int`` does not accept ``true``.

    >>> parse_message('{"type": "say", "text": "hi"}', {"type": str, "text": str})
    {'type': 'say', 'text': 'hi'}
    >>> parse_message('{"type": "say"}', {"type": str, "text": str})
    Traceback (most recent call last):
    ...
    wslab.messages.MessageError: missing field 'text'
    """
    if not isinstance(data, str):
        raise MessageError("expected a text message with JSON, got binary data")
    try:
        message = json.loads(data)
    except json.JSONDecodeError as exc:
        raise MessageError(f"not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(message, dict):
        raise MessageError(f"expected a JSON object {{...}}, got {_json_type(message)}")
    for name, kind in fields.items():
        if name not in message:
            raise MessageError(f"missing field {name!r}")
        if not _has_type(message[name], kind):
            raise MessageError(f"field {name!r} must be {_NAMES.get(kind, kind.__name__)}, got {_json_type(message[name])}")
    return message


def _has_type(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    return _NAMES.get(type(value), type(value).__name__)
