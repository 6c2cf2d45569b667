"""Malformed input at the byte level: each bad client gets the right answer; everyone else keeps going."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect

import wslab
from wslab.chat import ChatServer
from wslab.chat.client import ChatClient
from wslab.frames import Opcode, encode_frame, parse_close, read_frame, upgrade_request

from .conftest import echo

MASK = bytes.fromhex("37fa213d")
GOOD_HEAD = b"Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"


def masked(first_byte: int, payload: bytes) -> bytes:
    """A masked frame with a hand-made first byte (FIN, reserved bits, opcode): for what encode_frame refuses."""
    return bytes([first_byte, 0x80 | len(payload)]) + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


# Opening handshakes that are not acceptable, and the HTTP status each gets.
BAD_HANDSHAKES = {
    "no Upgrade header": (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 426),
    "Upgrade to another protocol": (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 426),
    "no Connection header": (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 426),
    "no Sec-WebSocket-Key": (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", 400),
    "a key that is not 16 bytes": (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n", 400),
    "version 8": (b"GET / HTTP/1.1\r\n" + GOOD_HEAD + b"Sec-WebSocket-Version: 8\r\n\r\n", 400),
    "POST instead of GET": (b"POST / HTTP/1.1\r\n" + GOOD_HEAD + b"Sec-WebSocket-Version: 13\r\n\r\n", 405),
    "HTTP/1.0": (b"GET / HTTP/1.0\r\n" + GOOD_HEAD + b"Sec-WebSocket-Version: 13\r\n\r\n", 505),
    "a 10 kB header line": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n", 431),
    "200 headers": (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n", 431),
}

# Frames a client must never send after a good handshake, and the close code and reason each gets.
BAD_FRAMES = {
    "unmasked frame": (encode_frame(Opcode.TEXT, b"hi"), 1002, "incorrect masking"),
    "reserved data opcode 0x3": (masked(0x83, b"hi"), 1002, "invalid opcode"),
    "reserved control opcode 0xB": (masked(0x8B, b"hi"), 1002, "invalid opcode"),
    "RSV1 set without an extension": (masked(0xC1, b"hi"), 1002, "reserved bits must be 0"),
    "invalid UTF-8 in a text frame": (encode_frame(Opcode.TEXT, b"\xff\xfe", mask=MASK), 1007, "invalid start byte at position 0"),
    "frame over max_size": (encode_frame(Opcode.BINARY, b"x" * 2000, mask=MASK), 1009, "frame with 2000 bytes exceeds limit of 1024 bytes"),
    "64-bit length with the top bit set": (bytes([0x82, 0xFF]) + (2**63).to_bytes(8, "big") + MASK, 1009, "frame with 9223372036854775808 bytes exceeds limit of 1024 bytes"),
    "ping longer than 125 bytes": (encode_frame(Opcode.PING, b"x" * 126, mask=MASK), 1002, "control frame too long"),
    "fragmented ping": (encode_frame(Opcode.PING, b"x", fin=False, mask=MASK), 1002, "fragmented control frame"),
    "continuation with nothing to continue": (encode_frame(Opcode.CONT, b"x", mask=MASK), 1002, "unexpected continuation frame"),
    "new message inside a fragmented one": (encode_frame(Opcode.TEXT, b"a", fin=False, mask=MASK) + encode_frame(Opcode.TEXT, b"b", mask=MASK), 1002, "expected a continuation frame"),
    "close code 999": (encode_frame(Opcode.CLOSE, (999).to_bytes(2, "big"), mask=MASK), 1002, "invalid status code"),
    "close code 1005 (never on the wire)": (encode_frame(Opcode.CLOSE, (1005).to_bytes(2, "big"), mask=MASK), 1002, "invalid status code"),
    "close frame of 1 byte": (encode_frame(Opcode.CLOSE, b"\x03", mask=MASK), 1002, "close frame too short"),
    "close reason not UTF-8": (encode_frame(Opcode.CLOSE, b"\x03\xe8\xff", mask=MASK), 1007, "invalid start byte at position 0"),
}


@pytest.fixture(params=["echo server", "chat server"])
async def target(request):  # type: ignore[no-untyped-def]
    """A server (max_size 1 KiB) and the WebSocket path it serves, with a good client connected throughout.

    The good client checks at the end that the bad one changed nothing for it.
    """
    if request.param == "echo server":
        server = await wslab.start(echo, max_size=1024, compression=None)
        async with connect(server.uri) as bystander:
            yield server, "/"
            await bystander.send("still here?")
            assert await bystander.recv() == "still here?"
    else:
        chat = ChatServer(max_size=1024)
        server = await chat.start(compression=None)
        async with ChatClient(chat.ws_uri) as bystander:
            await bystander.join("lobby", "bystander")
            yield server, "/ws"
            await bystander.say("still here?")
            assert (await bystander.recv())["text"] == "still here?"
    await server.stop()


async def raw_connection(server: wslab.BackgroundServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(server.host, server.port)


@pytest.mark.parametrize(("request_bytes", "status"), BAD_HANDSHAKES.values(), ids=BAD_HANDSHAKES.keys())
async def test_bad_handshake_gets_the_right_status(target, request_bytes: bytes, status: int) -> None:  # type: ignore[no-untyped-def]
    server, path = target
    reader, writer = await raw_connection(server)
    real_host = f"Host: {server.host}:{server.port}".encode()  # the chat answers only to Host names it serves
    writer.write(request_bytes.replace(b" / HTTP", f" {path} HTTP".encode(), 1).replace(b"Host: x", real_host, 1))
    async with asyncio.timeout(5):
        status_line = await reader.readline()
    assert status_line.split()[:2] == [b"HTTP/1.1", str(status).encode()]
    writer.close()


async def test_bytes_that_are_not_http_get_no_answer_and_a_closed_connection(target) -> None:  # type: ignore[no-untyped-def]
    server, _ = target
    reader, writer = await raw_connection(server)
    writer.write(b"\x16\x03\x01\x02\x00 a TLS hello to a plain server\r\n\r\n")
    async with asyncio.timeout(5):
        assert await reader.read() == b""
    writer.close()


@pytest.mark.parametrize(("frame", "code", "reason"), BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
async def test_bad_frame_gets_the_right_close_code(target, frame: bytes, code: int, reason: str) -> None:  # type: ignore[no-untyped-def]
    server, path = target
    reader, writer = await raw_connection(server)
    writer.write(upgrade_request(f"{server.host}:{server.port}", path))
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    writer.write(frame)
    async with asyncio.timeout(5):
        while (answer := await read_frame(reader)).opcode == Opcode.TEXT:
            pass  # the chat greets every client first
        assert (answer.opcode, parse_close(answer.payload)) == (Opcode.CLOSE, (code, reason))
        assert await reader.read() == b""  # then the server hangs up
    writer.close()
