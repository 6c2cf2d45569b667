"""JSON messages: parse one, check its fields, and explain to the client what was wrong."""

from __future__ import annotations

import json
import math
import re
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
    message = _loads(data)
    if not isinstance(message, dict):
        raise MessageError(f"expected a JSON object {{...}}, got {_json_type(message)}")
    for name, kind in fields.items():
        if name not in message:
            raise MessageError(f"missing field {name!r}")
        if not _has_type(message[name], kind):
            raise MessageError(f"field {name!r} must be {_NAMES.get(kind, kind.__name__)}, got {_json_type(message[name])}")
    return message


def _loads(data: str) -> Any:
    """``json.loads`` that turns every way JSON from the network can fail into a :class:`MessageError`.

    Besides syntax errors: nesting deeper than Python's recursion limit (``RecursionError``), integers
    over 4,300 digits (``ValueError``), ``NaN``/``Infinity`` and numbers too big for a float (not JSON,
    and a browser's ``JSON.parse`` rejects them when they are sent back), and lone surrogates such as
    ``"\\ud800"`` (valid JSON escapes that no UTF-8 text can carry: sending them back would fail).
    """
    try:
        message = json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise MessageError(f"not valid JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise MessageError("JSON nested too deeply") from None
    except ValueError as exc:  # int digits over sys.get_int_max_str_digits(), or one of the hooks below
        if isinstance(exc, MessageError):
            raise
        raise MessageError("a number in the JSON has too many digits") from None
    if _SURROGATE.search(data) and _has_surrogate(message):
        raise MessageError("the JSON holds a lone surrogate (such as \\ud800), which is not text and cannot be sent back")
    return message


_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")  # a cheap pre-check on the raw text


def _reject_constant(name: str) -> Any:
    raise MessageError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MessageError(f"the number {text[:20]} is too big")
    return value


def _has_surrogate(value: Any) -> bool:
    """True if a string anywhere in ``value`` (keys too) holds a lone surrogate; iterative, any depth."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _LONE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


_LONE = re.compile("[\ud800-\udfff]")


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
