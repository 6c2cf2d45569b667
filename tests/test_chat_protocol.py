"""The chat protocol: what parse_client accepts, the error code for each bad message, the encoded replies."""

from __future__ import annotations

import json

import pytest

from wslab.chat import LIMITS, VERSION, ChatError, describe, encode, nick_key, page, parse_client

# Bad messages, the error code each gets, and a piece of its human-readable message.
BAD = {
    "bad JSON": ("{not json", "bad-json", "not valid JSON"),
    "truncated JSON": ('{"v": 1, "type": "say"', "bad-json", "not valid JSON"),
    "an array": ("[1, 2]", "not-object", "expected a JSON object"),
    "a string": ('"hello"', "not-object", "expected a JSON object"),
    "null": ("null", "not-object", "got null"),
    "binary frame": (b'{"v": 1, "type": "leave"}', "binary", "binary"),
    "no version": ('{"type": "leave"}', "bad-version", "missing field 'v'"),
    "version 2": ('{"v": 2, "type": "leave"}', "bad-version", "this server speaks version 1"),
    "version as a string": ('{"v": "1", "type": "leave"}', "bad-version", "unsupported version"),
    "version true": ('{"v": true, "type": "leave"}', "bad-version", "unsupported version"),
    "no type": ('{"v": 1}', "bad-field", "missing field 'type'"),
    "type not a string": ('{"v": 1, "type": 3}', "bad-field", "field 'type' must be a string"),
    "unknown type": ('{"v": 1, "type": "shout"}', "unknown-type", "unknown type 'shout'"),
    "say without text": ('{"v": 1, "type": "say"}', "bad-field", "missing field 'text'"),
    "join without nick": ('{"v": 1, "type": "join", "room": "a"}', "bad-field", "missing field 'nick'"),
    "join without room": ('{"v": 1, "type": "join", "nick": "a"}', "bad-field", "missing field 'room'"),
    "text not a string": ('{"v": 1, "type": "say", "text": 5}', "bad-field", "field 'text' must be a string"),
    "nick null": ('{"v": 1, "type": "join", "room": "a", "nick": null}', "bad-field", "got null"),
    "empty text": ('{"v": 1, "type": "say", "text": "   "}', "bad-field", "field 'text' is empty"),
    "empty nick": ('{"v": 1, "type": "join", "room": "a", "nick": ""}', "bad-field", "field 'nick' is empty"),
    "text too long": (encode({"type": "say", "text": "x" * (LIMITS["text"] + 1)}), "too-long", "the limit is 500"),
    "nick too long": (encode({"type": "join", "room": "a", "nick": "n" * (LIMITS["nick"] + 1)}), "too-long", "the limit is 24"),
    "room too long": (encode({"type": "join", "room": "r" * (LIMITS["room"] + 1), "nick": "a"}), "too-long", "the limit is 32"),
    "control character in a nick": (encode({"type": "join", "room": "a", "nick": "a\x07b"}), "bad-field", "control characters"),
    # encoding: what cannot be sent back, or shows as something else
    "lone surrogate in a nick": ('{"v":1,"type":"join","room":"r","nick":"\\ud800x"}', "bad-json", "lone surrogate"),
    "lone surrogate in an ignored field": ('{"v":1,"type":"leave","x":["\\udfff"]}', "bad-json", "lone surrogate"),
    "zero-width space in a nick": (encode({"type": "join", "room": "a", "nick": "ada\u200b"}), "bad-field", "U+200B"),
    "bidi override in a text": (encode({"type": "say", "text": "hi \u202eevil"}), "bad-field", "U+202E"),
    "newline in a text": (encode({"type": "say", "text": "hi\nbob: fake"}), "bad-field", "U+000A"),
    "private use in a room": (encode({"type": "join", "room": "\ue000", "nick": "a"}), "bad-field", "private-use"),
    "unassigned code point in a text": (encode({"type": "say", "text": "\U000e0fff"}), "bad-field", "unassigned"),
    "line separator in a text": (encode({"type": "say", "text": "a\u2028b"}), "bad-field", "line separators"),
    # nesting and size
    "60,000 brackets": ("[" * 60_000, "bad-json", "nested too deeply"),
    "deep nesting in an extra field": ('{"v":1,"type":"leave","x":' + "[" * 30_000 + "]" * 30_000 + "}", "bad-json", "nested too deeply"),
    "5,000-digit integer in an extra field": ('{"v":1,"type":"leave","x":' + "9" * 5000 + "}", "bad-json", "too many digits"),
    "5,000-digit version": ('{"v":' + "1" * 5000 + ',"type":"leave"}', "bad-json", "too many digits"),
    "a 4,000-digit version": ('{"v":' + "1" * 4000 + ',"type":"leave"}', "bad-version", "(a huge number)"),
    "version 1.0": ('{"v": 1.0, "type": "leave"}', "bad-version", "unsupported version 1.0"),
    "NaN in an extra field": ('{"v":1,"type":"leave","x":NaN}', "bad-json", "NaN"),
}


@pytest.mark.parametrize(("data", "code", "words"), BAD.values(), ids=BAD.keys())
def test_each_bad_message_gets_its_code_and_an_explanation(data: str | bytes, code: str, words: str) -> None:
    with pytest.raises(ChatError) as caught:
        parse_client(data)
    assert caught.value.code == code
    assert words in str(caught.value)
    reply = json.loads(caught.value.reply())
    assert reply == {"v": VERSION, "type": "error", "code": code, "error": str(caught.value)}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"v": 1, "type": "join", "room": " lobby ", "nick": "ada"}', {"v": 1, "type": "join", "room": "lobby", "nick": "ada"}),
        ('{"v": 1, "type": "say", "text": "emoji \u200d and tab-free"}', {"v": 1, "type": "say", "text": "emoji \u200d and tab-free"}),
        ('{"v": 1, "type": "join", "room": "caf\\u0065\\u0301", "nick": "ada"}', {"v": 1, "type": "join", "room": "caf\u00e9", "nick": "ada"}),
        ('{"v": 1, "type": "leave", "extra": [1]}', {"v": 1, "type": "leave", "extra": [1]}),
        (encode({"type": "say", "text": "é" * LIMITS["text"]}), {"v": 1, "type": "say", "text": "é" * LIMITS["text"]}),
    ],
)
def test_good_messages_pass_stripped_with_extra_fields_kept(data: str, expected: dict) -> None:
    assert parse_client(data) == expected


def test_encode_puts_the_version_first_and_keeps_unicode() -> None:
    assert encode({"type": "message", "text": "héllo"}) == '{"v": 1, "type": "message", "text": "héllo"}'


def test_encode_never_fails_even_on_text_that_utf8_cannot_carry() -> None:
    assert encode({"type": "x", "text": "\ud800"}).encode() == b'{"v": 1, "type": "x", "text": "\\ud800"}'


def test_nicknames_that_read_the_same_collide() -> None:
    assert nick_key("Ada") == nick_key("ada") == nick_key("\uff41da")


def test_chat_error_is_a_message_error() -> None:
    from wslab import MessageError

    assert issubclass(ChatError, MessageError)


def test_describe_formats_each_server_message() -> None:
    joined = {"type": "joined", "room": "r", "nick": "ada", "members": ["ada", "bob"], "history": [{"seq": 1, "nick": "bob", "text": "hi"}]}
    assert describe(joined) == "[r] you are ada; here: ada, bob\n[r] (history) bob: hi"
    presence = {"type": "presence", "room": "r", "changes": [{"event": "join", "nick": "cy"}, {"event": "leave", "nick": "bob"}], "count": 2}
    assert describe(presence) == "[r] * cy joined, bob left; 2 here"
    assert describe({"type": "error", "code": "bad-json", "error": "x"}) == "error bad-json: x"


def test_the_page_ships_with_the_package_and_has_the_documented_ids() -> None:
    html = page()
    for element in ("nick", "room", "join", "leave", "text", "send", "messages", "error", "status"):
        assert f'id="{element}"' in html
    assert 'new URL("ws", location.href)' in html  # follows a proxy prefix, no hard-coded port
    assert "innerHTML" not in html.replace("never innerHTML", "")
