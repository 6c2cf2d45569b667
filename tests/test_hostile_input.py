"""Generated hostile input for every wslab parser that reads the network: a clear error or a valid result.

Hypothesis makes the input: arbitrary bytes, JSON with deep nesting, huge integers, lone surrogates,
zero-width and bidi characters. The properties say what may come out; anything else (a RecursionError,
a UnicodeEncodeError, a ValueError that is not ours) is a bug, whatever the input.
"""

from __future__ import annotations

import asyncio
import json
import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wslab
from wslab import frames
from wslab.messages import MessageError, parse_message
from wslab.transcript import Transcript, visible

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Characters that make text lie about itself: invisible, reordering, line-breaking, or not text at all.
TRICKY = st.sampled_from(
    ["\u200b", "\u200d", "\ufeff", "\u202e", "\u2066", "\u2069", "\u061c", "\r", "\x1b", "\x00", "\u2028", "\x85"]
)
LONE_SURROGATE = st.integers(0xD800, 0xDFFF).map(chr)
TEXT = st.text(st.one_of(st.characters(), TRICKY, LONE_SURROGATE), max_size=40)


def nested(depth: int, kind: str) -> str:
    return kind[0] * depth + kind[1] * depth


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False), st.integers(), TEXT
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)

HOSTILE_JSON = st.one_of(
    # JSON that json.dumps can write (with surrogates escaped as \ud800, as a peer may send them)
    JSON_VALUES.map(lambda v: json.dumps({"type": "say", "text": "hi", "extra": v})),
    JSON_VALUES.map(json.dumps),
    # nesting deep enough to exhaust the recursion limit, opened and maybe never closed
    st.builds(nested, st.integers(900, 200_000), st.sampled_from(["[]", "{}"])),
    st.integers(900, 200_000).map(lambda n: '{"type": "say", "text": ' + "[" * n + "]" * n + "}"),
    # integers too long for int(), in a field nobody reads
    st.integers(4_000, 50_000).map(lambda n: '{"type": "say", "text": "hi", "n": ' + "9" * n + "}"),
    # not JSON numbers, and numbers too big for a float
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400"]).map(lambda x: '{"type": "say", "n": ' + x + "}"),
    # a lone surrogate as a JSON escape, in a value or a key
    st.integers(0xD800, 0xDFFF).map(lambda c: '{"type": "say", "text": "\\u%04x"}' % c),
    st.integers(0xD800, 0xDFFF).map(lambda c: '{"\\u%04x": 1, "type": "say", "text": ""}' % c),
    TEXT,
)


@FAST
@given(HOSTILE_JSON)
def test_parse_message_gives_a_message_it_can_send_back_or_a_clear_error(data: str) -> None:
    try:
        message = parse_message(data, {"type": str})
    except MessageError as error:
        reply = error.reply()
        reply.encode("utf-8")  # the error itself can always be sent
        assert json.loads(reply)["type"] == "error" and str(error)
        return
    assert isinstance(message, dict) and isinstance(message["type"], str)
    # whatever passed can go back out as strict JSON in UTF-8, to any peer
    json.dumps(message, ensure_ascii=False, allow_nan=False).encode("utf-8")


@FAST
@given(st.binary(max_size=64))
def test_parse_message_refuses_binary(data: bytes) -> None:
    try:
        parse_message(data, {})
    except MessageError as error:
        assert "binary" in str(error)
    else:
        raise AssertionError("binary data was accepted")


@FAST
@given(st.binary(max_size=300))
def test_decode_frame_on_arbitrary_bytes_gives_a_frame_or_a_frame_error(data: bytes) -> None:
    try:
        frame = frames.decode_frame(data)
    except frames.FrameError as error:
        assert str(error)
        return
    assert frames.encode_frame(frame.opcode, frame.payload, fin=frame.fin, mask=frame.mask) == data


@FAST
@given(st.binary(max_size=40))
def test_explain_and_parse_close_never_crash(data: bytes) -> None:
    for parse in (frames.explain, frames.parse_close, frames.parse_response):
        try:
            parse(data)
        except frames.FrameError:
            pass


@SLOW
@given(st.binary(max_size=200), st.integers(1, 7))
def test_read_frame_from_a_stream_gives_a_frame_or_a_clear_error(data: bytes, chunk: int) -> None:
    async def read() -> None:
        reader = asyncio.StreamReader()
        for start in range(0, len(data), chunk):  # however TCP splits the bytes
            reader.feed_data(data[start : start + chunk])
        reader.feed_eof()
        try:
            await frames.read_frame(reader, max_size=100)
        except (frames.FrameError, asyncio.IncompleteReadError):
            pass

    asyncio.run(read())


@FAST
@given(st.text(st.one_of(st.characters(), TRICKY, LONE_SURROGATE), max_size=60))
def test_a_transcript_line_is_always_printable_and_one_line(text: str) -> None:
    transcript = Transcript()
    transcript.add(f"client 1: {text}")
    for line in transcript.lines:
        line.encode("utf-8")  # printing it to a UTF-8 notebook cannot fail
        assert not any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") and ch != "\t" for ch in line)
        assert not any(unicodedata.bidirectional(ch) in ("RLO", "LRO", "RLE", "LRE", "RLI", "LRI", "FSI", "PDF", "PDI") for ch in line)
    assert visible(visible(text)) == visible(text)  # escaping twice changes nothing more
    assert len(transcript.lines) == text.count("\n") + 1


@SLOW
@given(st.binary(max_size=300))
def test_http_get_against_arbitrary_answers_gives_an_answer_or_a_clear_error(answer: bytes) -> None:
    async def ask() -> None:
        async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(reply, "127.0.0.1", 0)
        start = asyncio.get_running_loop().time()
        try:  # tests/test_http_hostile.py builds the answers from HTTP's structure instead
            got = await wslab.http_get(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/", timeout=2)
            assert 100 <= got.status <= 599
        except (wslab.NoHttpAnswer, TimeoutError) as error:
            assert str(error).startswith("GET http://127.0.0.1:")
        finally:
            server.close()
            await server.wait_closed()
        assert asyncio.get_running_loop().time() - start < 3  # the timeout, and some slack

    asyncio.run(ask())


@FAST
@given(st.text(st.one_of(st.characters(codec="latin-1"), TRICKY), max_size=40))
def test_a_header_from_the_peer_shows_escaped_in_a_frame_trace(value: str) -> None:
    import logging

    from wslab.trace import FrameTrace

    trace = FrameTrace()
    trace.emit(logging.LogRecord("websockets.client", logging.DEBUG, __file__, 1, "< User-Agent: %s", (value,), None))
    (line,) = trace.lines
    assert line == "client < User-Agent: " + visible(value)
    line.encode("utf-8")
