"""Frame traces: readable and identical from run to run."""

from __future__ import annotations

import logging
import re

import pytest
from websockets.asyncio.client import connect

import wslab
from wslab.trace import normalise

from .conftest import echo


async def traced_exchange() -> list[str]:
    server = await wslab.start(echo)
    with wslab.trace_frames(show=False) as trace:
        async with connect(server.uri + "/chat") as ws:
            await ws.send("hello")
            await ws.recv()
            await ws.send(b"\x01\x02")
            await ws.recv()
            pong = await ws.ping()
            await pong
    await server.stop()
    return trace.lines


async def test_trace_is_stable_across_runs() -> None:
    first, second = await traced_exchange(), await traced_exchange()
    assert first == second


async def test_trace_shows_handshake_and_frames_of_both_sides() -> None:
    lines = await traced_exchange()
    assert "client > GET /chat HTTP/1.1" in lines
    assert "server > HTTP/1.1 101 Switching Protocols" in lines
    assert "client > Sec-WebSocket-Key: <random key>" in lines
    assert "server > Sec-WebSocket-Accept: <hash of the key>" in lines
    assert "client > Host: 127.0.0.1:PORT" in lines
    assert "client > TEXT 'hello' [5 bytes]" in lines
    assert "server < TEXT 'hello' [5 bytes]" in lines
    assert "client < BINARY 01 02 [2 bytes]" in lines
    assert "client > PING <payload> [binary, 4 bytes]" in lines
    assert "server > PONG <payload> [binary, 4 bytes]" in lines
    assert "client > CLOSE 1000 (OK) [2 bytes]" in lines
    text = "\n".join(lines)
    assert not re.search(r":\d{4,5}\b", text), "a port survived normalisation"
    assert "GMT" not in text and "==" not in text


async def test_handshake_false_keeps_frames_only(capsys: pytest.CaptureFixture[str]) -> None:
    server = await wslab.start(echo)
    with wslab.trace_frames(handshake=False):
        async with connect(server.uri) as ws:
            await ws.send("hi")
            await ws.recv()
    await server.stop()
    out = capsys.readouterr().out.splitlines()
    assert "client > TEXT 'hi' [2 bytes]" in out
    assert not any("GET" in line or "Upgrade" in line for line in out)


async def test_trace_restores_logging_and_leaves_no_handler() -> None:
    logger = logging.getLogger("websockets")
    before = (logger.level, logger.propagate, list(logger.handlers))
    await traced_exchange()
    assert (logger.level, logger.propagate, list(logger.handlers)) == before


async def test_connections_opened_before_the_trace_are_not_traced(capsys: pytest.CaptureFixture[str]) -> None:
    server = await wslab.start(echo)
    async with connect(server.uri) as ws:
        with wslab.trace_frames():
            await ws.send("hi")
            await ws.recv()
    await server.stop()
    assert "connect inside the trace block" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("> PING 1a 2b 3c 4d [binary, 4 bytes]", "> PING <payload> [binary, 4 bytes]"),
        ("< PONG 00 ff 10 20 [binary, 4 bytes]", "< PONG <payload> [binary, 4 bytes]"),
        ("> PING 'hi' [text, 2 bytes]", "> PING 'hi' [text, 2 bytes]"),
        ("> PING 'a$Z7' [text, 4 bytes]", "> PING <payload> [binary, 4 bytes]"),  # random bytes that are UTF-8
        ("< PONG '\\x01b c' [text, 4 bytes]", "< PONG <payload> [binary, 4 bytes]"),
        ("> Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "> Sec-WebSocket-Key: <random key>"),
        ("< Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "< Sec-WebSocket-Accept: <hash of the key>"),
        ("> Date: Tue, 24 Nov 2026 16:21:27 GMT", "> Date: <date>"),
        ("> Server: Python/3.13 websockets/17.4", "> Server: Python/<version> websockets/<version>"),
        ("> Host: [::1]:8765", "> Host: [::1]:PORT"),
        ("masking key: 37 fa 21 3d", "masking key: <mask>"),
        ("> TEXT 'PING 1a' [7 bytes]", "> TEXT 'PING 1a' [7 bytes]"),
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert normalise(raw) == expected
