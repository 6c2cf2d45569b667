"""wslab.frames agrees with websockets' own frame parser and with a real server."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import ProtocolError
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode as WsOpcode
from websockets.http11 import Request
from websockets.streams import StreamReader

import wslab
from wslab.frames import (
    Frame,
    FrameError,
    Header,
    Opcode,
    accept_key,
    apply_mask,
    close_payload,
    decode_frame,
    encode_frame,
    explain,
    header_size,
    parse_close,
    parse_header,
    parse_response,
    read_frame,
    read_frame_bytes,
    upgrade_request,
)

from .conftest import echo

MASK = bytes.fromhex("37fa213d")  # the masking key of RFC 6455 section 5.7
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # the sample key of RFC 6455 section 1.3

# Data frames in all three length forms: 7-bit (<=125), 16-bit (126..65535), 64-bit (>65535).
DATA_LENGTHS = [0, 1, 125, 126, 65535, 65536, 70000]
# Control frames (close, ping, pong) carry at most 125 bytes.
CONTROL_LENGTHS = [0, 2, 125]


def payload_for(opcode: Opcode, length: int) -> bytes:
    if opcode is Opcode.CLOSE and length:
        return close_payload(1000, "x" * (length - 2))
    if opcode is Opcode.TEXT:  # valid UTF-8 of exactly `length` bytes, with 2-byte characters
        return ("é" * (length // 2) + "a" * (length % 2)).encode()
    return bytes(i % 256 for i in range(length))


CASES = [(op, n) for op in (Opcode.TEXT, Opcode.BINARY) for n in DATA_LENGTHS] + [
    (op, n) for op in (Opcode.CLOSE, Opcode.PING, Opcode.PONG) for n in CONTROL_LENGTHS
]


def websockets_parse(data: bytes, *, mask: bool) -> WsFrame:
    """Parse ``data`` with websockets' parser; fail if it needs more bytes or leaves some."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = WsFrame.parse(reader.read_exact, mask=mask, max_size=None)
    try:
        next(parser)
    except StopIteration as done:
        frame: WsFrame = done.value
    else:
        raise AssertionError("websockets wanted more bytes than the frame has")
    assert not reader.buffer, f"{len(reader.buffer)} bytes left after the frame"
    return frame


# --- the RFC's own samples ---------------------------------------------------


def test_accept_key_rfc_sample() -> None:
    assert accept_key(RFC_KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_rfc_sample_frames() -> None:
    # RFC 6455 section 5.7: a single-frame unmasked and masked text message "Hello".
    assert encode_frame(Opcode.TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    assert encode_frame(Opcode.TEXT, b"Hello", mask=MASK) == bytes.fromhex("818537fa213d7f9f4d5158")
    # 256 bytes of binary data in a single unmasked frame: 16-bit length.
    assert encode_frame(Opcode.BINARY, bytes(256))[:4] == bytes.fromhex("827e0100")
    # 64 KiB: 64-bit length.
    assert encode_frame(Opcode.BINARY, bytes(65536))[:10] == bytes.fromhex("827f0000000000010000")


def test_opcodes_match_websockets() -> None:
    assert {op.name: op.value for op in Opcode} == {op.name: op.value for op in WsOpcode}


# --- our encoder, websockets' parser -----------------------------------------


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "unmasked"])
@pytest.mark.parametrize(("opcode", "length"), CASES, ids=[f"{op.name}-{n}" for op, n in CASES])
def test_websockets_parses_our_frames(opcode: Opcode, length: int, masked: bool) -> None:
    payload = payload_for(opcode, length)
    data = encode_frame(opcode, payload, mask=MASK if masked else None)
    frame = websockets_parse(data, mask=masked)
    assert (frame.opcode.value, bytes(frame.data), frame.fin) == (opcode.value, payload, True)


def test_websockets_parses_a_fragment() -> None:
    first = websockets_parse(encode_frame(Opcode.TEXT, b"Hel", fin=False, mask=MASK), mask=True)
    rest = websockets_parse(encode_frame(Opcode.CONT, b"lo", mask=MASK), mask=True)
    assert (first.fin, first.opcode, bytes(first.data)) == (False, WsOpcode.TEXT, b"Hel")
    assert (rest.fin, rest.opcode, bytes(rest.data)) == (True, WsOpcode.CONT, b"lo")


def test_websockets_rejects_an_unmasked_client_frame() -> None:
    with pytest.raises(ProtocolError, match="incorrect masking"):
        websockets_parse(encode_frame(Opcode.TEXT, b"Hello"), mask=True)


# --- websockets' serialiser, our decoder -------------------------------------


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "unmasked"])
@pytest.mark.parametrize(("opcode", "length"), CASES, ids=[f"{op.name}-{n}" for op, n in CASES])
def test_we_decode_websockets_frames(opcode: Opcode, length: int, masked: bool) -> None:
    payload = payload_for(opcode, length)
    data = WsFrame(WsOpcode(opcode.value), payload).serialize(mask=masked)
    frame = decode_frame(data)
    assert (frame.opcode, frame.payload, frame.fin) == (opcode, payload, True)
    assert (frame.mask is not None) == masked
    if masked:  # the key websockets chose sits right before the payload
        assert frame.mask == data[-length - 4 : len(data) - length]


def test_round_trip_keeps_every_field() -> None:
    for mask in (MASK, None):
        frame = Frame(Opcode.BINARY, b"\x00\xff" * 100, fin=False, mask=mask)
        assert decode_frame(encode_frame(frame.opcode, frame.payload, fin=False, mask=mask)) == frame


def test_mask_is_its_own_inverse() -> None:
    assert apply_mask(b"Hello", MASK) == bytes.fromhex("7f9f4d5158")
    assert apply_mask(apply_mask(b"Hello", MASK), MASK) == b"Hello"


def test_close_payload_round_trip() -> None:
    assert close_payload(1000, "bye") == b"\x03\xe8bye"
    assert parse_close(b"\x03\xe8bye") == (1000, "bye")
    assert parse_close(b"") == (1005, "")


# --- bad input: clear errors ---------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "at least 2 bytes, got 0"),
        (b"\x81", "at least 2 bytes, got 1"),
        (bytes.fromhex("81fe00"), "header needs 8 bytes, got 3"),
        (bytes.fromhex("817f0000"), "header needs 10 bytes, got 4"),
        (bytes.fromhex("818537fa213d7f9f"), "expected 11 bytes, got 8"),
        (bytes.fromhex("817e0100") + bytes(10), "expected 260 bytes, got 14"),
    ],
    ids=["empty", "one-byte", "short-16-bit-header", "short-64-bit-header", "short-payload", "short-long-payload"],
)
def test_truncated_frame(data: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=f"truncated frame: .*{message}"):
        decode_frame(data)


def test_bytes_after_the_frame() -> None:
    with pytest.raises(FrameError, match="2 bytes after the frame"):
        decode_frame(encode_frame(Opcode.TEXT, b"Hi") + b"\x81\x00")


def test_reserved_bits_mean_an_extension() -> None:
    compressed = bytes([0xC1, 0x02]) + b"xx"  # RSV1 set, as permessage-deflate does
    with pytest.raises(FrameError, match="permessage-deflate"):
        decode_frame(compressed)


def test_unknown_opcode() -> None:
    with pytest.raises(FrameError, match="unknown opcode 0x3"):
        decode_frame(b"\x83\x00")


def test_mask_must_have_four_bytes() -> None:
    with pytest.raises(FrameError, match="exactly 4 bytes, got 3"):
        encode_frame(Opcode.TEXT, b"Hi", mask=b"abc")


# --- streams, the handshake, explain -----------------------------------------------


async def test_read_frame_reads_one_frame_at_a_time() -> None:
    reader = asyncio.StreamReader()
    frames = [encode_frame(Opcode.TEXT, b"a" * n, mask=MASK) for n in (5, 300, 70000)]
    frames.append(encode_frame(Opcode.BINARY, b"b" * 200))
    reader.feed_data(b"".join(frames) + b"\x81")
    reader.feed_eof()
    assert [len((await read_frame(reader)).payload) for _ in frames[:3]] == [5, 300, 70000]
    assert await read_frame_bytes(reader) == frames[3]
    with pytest.raises(asyncio.IncompleteReadError):
        await read_frame(reader)


async def test_read_frame_waits_for_bytes_that_arrive_in_pieces() -> None:
    reader = asyncio.StreamReader()
    data = encode_frame(Opcode.TEXT, b"x" * 300, mask=MASK)
    reading = asyncio.create_task(read_frame(reader))
    for i in range(0, len(data), 3):  # a few bytes at a time, as TCP may deliver them
        reader.feed_data(data[i : i + 3])
        await asyncio.sleep(0)
    assert (await reading).payload == b"x" * 300


def test_header_fields() -> None:
    data = encode_frame(Opcode.PING, b"hi", mask=MASK)
    assert header_size(data[:2]) == 6
    assert parse_header(data) == Header(fin=True, opcode=Opcode.PING, masked=True, length=2, mask=MASK, size=6)
    assert parse_header(encode_frame(Opcode.BINARY, bytes(70000))).size == 10


def test_upgrade_request_is_valid_http() -> None:
    data = upgrade_request("example.com:8080", "/chat?room=1", key=RFC_KEY)
    reader = StreamReader()
    reader.feed_data(data)
    parser = Request.parse(reader.read_line)
    with pytest.raises(StopIteration) as done:
        next(parser)
    request: Request = done.value.value
    assert request.path == "/chat?room=1"
    assert request.headers["Host"] == "example.com:8080"
    assert request.headers["Sec-WebSocket-Key"] == RFC_KEY
    assert request.headers["Upgrade"] == "websocket"
    random_keys = {upgrade_request("h").split(b"Sec-WebSocket-Key: ")[1][:24] for _ in range(3)}
    assert len(random_keys) == 3


def test_parse_response() -> None:
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: abc=\r\n\r\n"
    assert parse_response(head) == ("HTTP/1.1 101 Switching Protocols", {"Upgrade": "websocket", "Sec-WebSocket-Accept": "abc="})


def test_explain_names_every_field() -> None:
    text = explain(encode_frame(Opcode.BINARY, bytes(300), mask=MASK))
    assert "opcode=0x2 (BINARY)" in text
    assert "MASK=1  length=126" in text
    assert "16-bit length = 300" in text
    assert "37 fa 21 3d  masking key" in text
    assert "then 300 payload bytes" in text


# --- against a real websockets server ----------------------------------------------


async def open_raw(server: wslab.BackgroundServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, str]]:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(upgrade_request(f"{server.host}:{server.port}", "/raw", key=RFC_KEY))
    status, headers = parse_response(await reader.readuntil(b"\r\n\r\n"))
    assert status == "HTTP/1.1 101 Switching Protocols"
    return reader, writer, headers


async def test_real_server_handshake_echo_and_close() -> None:
    async with wslab.start(echo, compression=None) as server:
        reader, writer, headers = await open_raw(server)
        assert headers["Sec-WebSocket-Accept"] == accept_key(RFC_KEY)
        for size in (5, 200, 70000):
            writer.write(encode_frame(Opcode.TEXT, b"x" * size, mask=MASK))
            reply = await read_frame(reader)
            assert (reply.opcode, reply.payload, reply.mask) == (Opcode.TEXT, b"x" * size, None)
        writer.write(encode_frame(Opcode.PING, b"ping!", mask=MASK))
        assert await read_frame(reader) == Frame(Opcode.PONG, b"ping!")
        writer.write(encode_frame(Opcode.CLOSE, close_payload(1000, "bye"), mask=MASK))
        reply = await read_frame(reader)
        assert parse_close(reply.payload) == (1000, "bye")
        assert await reader.read() == b""  # the server closes TCP after the closing handshake
        writer.close()
        await server.wait_idle()
        assert server.transcript.lines[-1] == "client 1: closed 1000 (OK) bye"


async def test_real_server_rejects_an_unmasked_frame() -> None:
    async with wslab.start(echo, compression=None) as server:
        reader, writer, _ = await open_raw(server)
        writer.write(encode_frame(Opcode.TEXT, b"Hello"))  # no mask: forbidden for clients
        reply = await read_frame(reader)
        assert reply.opcode is Opcode.CLOSE
        assert parse_close(reply.payload) == (1002, "incorrect masking")
        assert await reader.read() == b""
        writer.close()
        await server.wait_idle()
