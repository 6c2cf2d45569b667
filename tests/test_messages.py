"""JSON message validation: every kind of bad input gets a clear error, over a real connection too."""

from __future__ import annotations

import json
import re

import pytest
from websockets.asyncio.client import connect

import wslab
from wslab import MessageError, parse_message

SAY = {"type": str, "text": str}


def test_a_good_message_is_returned_with_extra_fields() -> None:
    assert parse_message('{"type": "say", "text": "hi", "mood": 3}', SAY) == {"type": "say", "text": "hi", "mood": 3}


@pytest.mark.parametrize(
    ("data", "fields", "error"),
    [
        ("hello", SAY, "not valid JSON: Expecting value at position 0"),
        ("", SAY, "not valid JSON: Expecting value at position 0"),
        ('["say", "hi"]', SAY, "expected a JSON object {...}, got an array"),
        ("null", SAY, "expected a JSON object {...}, got null"),
        ('{"type": "say"}', SAY, "missing field 'text'"),
        ('{"type": "say", "text": 42}', SAY, "field 'text' must be a string, got a number"),
        ('{"type": "say", "text": null}', SAY, "field 'text' must be a string, got null"),
        ('{"n": true}', {"n": int}, "field 'n' must be an integer, got true or false"),
        ('{"n": 1.5}', {"n": int}, "field 'n' must be an integer, got a number"),
        ('{"tags": "a"}', {"tags": list}, "field 'tags' must be an array, got a string"),
        (b'{"type": "say", "text": "hi"}', SAY, "expected a text message with JSON, got binary data"),
    ],
)
def test_bad_messages_say_what_is_wrong(data: str | bytes, fields: dict[str, type], error: str) -> None:
    with pytest.raises(MessageError) as caught:
        parse_message(data, fields)
    assert str(caught.value) == error
    assert json.loads(caught.value.reply()) == {"type": "error", "error": error}


def test_a_json_syntax_error_names_the_place_whatever_python_words_it() -> None:
    """3.11 says "Expecting property name ..." at 15, 3.13 "Illegal trailing comma ..." at 14: same meaning."""
    data = '{"type": "say",}'
    with pytest.raises(MessageError) as caught:
        parse_message(data, SAY)
    match = re.fullmatch(r"not valid JSON: (.+) at position (\d+)", str(caught.value))
    assert match, str(caught.value)
    assert int(match[2]) in (data.index(","), data.index(",") + 1)  # the trailing comma, or just after it


def test_float_accepts_integers_but_not_booleans() -> None:
    assert parse_message('{"x": 2}', {"x": float}) == {"x": 2}
    with pytest.raises(MessageError, match="must be a number, got true or false"):
        parse_message('{"x": false}', {"x": float})


def test_message_error_is_a_value_error() -> None:
    assert issubclass(MessageError, ValueError)


async def validating(websocket) -> None:  # type: ignore[no-untyped-def]
    """Replies to good messages, explains bad ones, and keeps the connection open."""
    async for data in websocket:
        try:
            message = parse_message(data, SAY)
        except MessageError as exc:
            await websocket.send(exc.reply())
            continue
        await websocket.send(json.dumps({"type": "said", "text": message["text"]}))


async def test_bad_clients_get_errors_and_stay_connected() -> None:
    async with wslab.start(validating) as server:
        async with connect(server.uri) as ws:
            replies = []
            for data in ["not json", '{"type": "say"}', '{"type": "say", "text": 1}', b"\x00\x01", "[]"]:
                await ws.send(data)
                replies.append(json.loads(await ws.recv())["error"])
            await ws.send('{"type": "say", "text": "still here"}')
            assert json.loads(await ws.recv()) == {"type": "said", "text": "still here"}
        assert replies == [
            "not valid JSON: Expecting value at position 0",
            "missing field 'text'",
            "field 'text' must be a string, got a number",
            "expected a text message with JSON, got binary data",
            "expected a JSON object {...}, got an array",
        ]
        await server.settle()
        lines = str(server.transcript).splitlines()
        assert lines[-1] == "client 1: closed 1000 (OK)"
        assert not any("failed" in line for line in lines)
