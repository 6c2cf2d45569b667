"""WebSocket frames and the opening handshake by hand (RFC 6455), small enough to read in one sitting.

This is teaching code: it encodes and decodes single frames and computes the handshake's
accept key, so that you can talk to a real server with nothing but a TCP socket. It does not
fragment messages, validate UTF-8 or support extensions (permessage-deflate): use
``websockets`` for real work.

>>> encode_frame(Opcode.TEXT, b"Hello", mask=bytes.fromhex("37fa213d")).hex(" ")
'81 85 37 fa 21 3d 7f 9f 4d 51 58'
>>> decode_frame(bytes.fromhex("810548656c6c6f")).payload
b'Hello'
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

__all__ = [
    "GUID",
    "Frame",
    "FrameError",
    "Header",
    "Opcode",
    "accept_key",
    "apply_mask",
    "close_payload",
    "decode_frame",
    "encode_frame",
    "explain",
    "header_size",
    "new_key",
    "parse_close",
    "parse_header",
    "parse_response",
    "read_frame",
    "read_frame_bytes",
    "upgrade_request",
]

# The fixed string RFC 6455 (section 1.3) appends to the client's key before hashing it.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class FrameError(ValueError):
    """Bytes that are not one complete, plain WebSocket frame."""


class Opcode(IntEnum):
    """What a frame carries: the low 4 bits of its first byte."""

    CONT = 0x0  # the next piece of a fragmented message
    TEXT = 0x1  # UTF-8 text
    BINARY = 0x2  # arbitrary bytes
    CLOSE = 0x8  # closing handshake: optional 2-byte code, then a UTF-8 reason
    PING = 0x9  # "are you there?": the other side must answer with a PONG
    PONG = 0xA  # the answer to a PING, with the same payload


@dataclass(frozen=True)
class Frame:
    """One decoded frame. ``mask`` is the 4-byte masking key if the frame was masked, else None."""

    opcode: Opcode
    payload: bytes
    fin: bool = True
    mask: bytes | None = None

    def __str__(self) -> str:
        masked = f"masked with {self.mask.hex(' ')}" if self.mask is not None else "unmasked"
        if self.opcode is Opcode.CLOSE and self.payload:
            code, reason = parse_close(self.payload)
            what = f"code {code}, reason {reason!r}"
        elif self.opcode is Opcode.TEXT:
            what = repr(self.payload.decode("utf-8", errors="replace"))
        else:
            what = repr(self.payload)
        return f"{self.opcode.name} fin={int(self.fin)} {masked}, {len(self.payload)} bytes: {what}"


def apply_mask(data: bytes, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask``, repeated. Masking and unmasking are the same operation.

    >>> apply_mask(apply_mask(b"Hello", b"abcd"), b"abcd")
    b'Hello'
    """
    if len(mask) != 4:
        raise FrameError(f"a masking key has exactly 4 bytes, got {len(mask)}")
    return bytes(byte ^ mask[i % 4] for i, byte in enumerate(data))


def encode_frame(opcode: Opcode | int, payload: bytes, *, fin: bool = True, mask: bytes | None = None) -> bytes:
    """Serialise one frame. Clients must pass a 4-byte ``mask``; servers send ``mask=None``.

    >>> encode_frame(Opcode.TEXT, b"Hi").hex(" ")
    '81 02 48 69'
    """
    # Byte 0: FIN bit (last frame of a message), three reserved bits (0), then the 4-bit opcode.
    first = (0x80 if fin else 0x00) | int(opcode)
    # Byte 1: MASK bit, then a 7-bit length; 126 and 127 mean "the real length follows".
    mask_bit = 0x80 if mask is not None else 0x00
    length = len(payload)
    if length <= 125:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length <= 0xFFFF:
        header = struct.pack("!BBH", first, mask_bit | 126, length)  # 16-bit length
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)  # 64-bit length
    if mask is None:
        return header + payload
    # A masked frame carries its 4-byte key after the length, then the XOR-ed payload.
    return header + mask + apply_mask(payload, mask)


class Header(NamedTuple):
    """The fields of a frame header; ``size`` is the header's length in bytes."""

    fin: bool
    opcode: Opcode
    masked: bool
    length: int
    mask: bytes | None
    size: int


def header_size(data: bytes) -> int:
    """How many bytes the header takes (2 to 14), known from its first two bytes."""
    if len(data) < 2:
        raise FrameError(f"truncated frame: a header has at least 2 bytes, got {len(data)}")
    extended = {126: 2, 127: 8}.get(data[1] & 0x7F, 0)  # bytes of extended length
    masking_key = 4 if data[1] & 0x80 else 0
    return 2 + extended + masking_key


def parse_header(data: bytes) -> Header:
    """Read the header at the start of ``data``; what follows it (the payload) is ignored.

    >>> header = parse_header(bytes.fromhex("81fe0100 37fa213d"))
    >>> header.opcode.name, header.masked, header.length, header.size
    ('TEXT', True, 256, 8)
    """
    size = header_size(data)
    if len(data) < size:
        raise FrameError(f"truncated frame: the header needs {size} bytes, got {len(data)}")
    first, second = data[0], data[1]
    if first & 0x70:
        raise FrameError(
            f"reserved bits set ({first:#04x}): this frame uses an extension such as permessage-deflate, "
            "which this decoder does not support; connect without offering it"
        )
    try:
        opcode = Opcode(first & 0x0F)
    except ValueError:
        raise FrameError(f"unknown opcode {first & 0x0F:#x}") from None
    fin, masked, length = bool(first & 0x80), bool(second & 0x80), second & 0x7F
    if length == 126:  # not a length: the real one is in the next 2 bytes
        (length,) = struct.unpack("!H", data[2:4])
    elif length == 127:  # ... or in the next 8 bytes
        (length,) = struct.unpack("!Q", data[2:10])
        if length >> 63:
            raise FrameError("the 64-bit length has its top bit set, which RFC 6455 forbids")
    if opcode >= Opcode.CLOSE and (length > 125 or not first & 0x80):
        raise FrameError(f"a {opcode.name} frame must have FIN set and at most 125 bytes, got fin={first >> 7} and {length}")
    mask = bytes(data[size - 4 : size]) if masked else None
    return Header(fin, opcode, masked, length, mask, size)


def decode_frame(data: bytes) -> Frame:
    """Decode exactly one frame (masked or not) and unmask its payload.

    >>> print(decode_frame(bytes.fromhex("818537fa213d7f9f4d5158")))
    TEXT fin=1 masked with 37 fa 21 3d, 5 bytes: 'Hello'
    """
    header = parse_header(data)
    end = header.size + header.length
    if len(data) < end:
        raise FrameError(f"truncated frame: expected {end} bytes, got {len(data)}")
    if len(data) > end:
        raise FrameError(f"{len(data) - end} bytes after the frame: decode one frame at a time")
    payload = bytes(data[header.size :])
    if header.mask is not None:
        payload = apply_mask(payload, header.mask)
    return Frame(header.opcode, payload, header.fin, header.mask)


async def read_frame_bytes(reader: asyncio.StreamReader, max_size: int = 2**20) -> bytes:
    """Read the bytes of exactly one frame from a stream, however TCP splits or joins them.

    A header that announces more than ``max_size`` payload bytes raises :class:`FrameError` before
    anything is read (a peer could announce 2**63 bytes), as websockets closes with 1009.
    """
    data = await reader.readexactly(2)  # enough to know how long the header is
    data += await reader.readexactly(header_size(data) - 2)  # extended length, masking key
    length = parse_header(data).length
    if length > max_size:
        raise FrameError(f"the frame announces {length} payload bytes, more than max_size={max_size}")
    return data + await reader.readexactly(length)


async def read_frame(reader: asyncio.StreamReader, max_size: int = 2**20) -> Frame:
    """Read one frame from a stream and decode it."""
    return decode_frame(await read_frame_bytes(reader, max_size))


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a CLOSE frame: a 2-byte status code, then the reason in UTF-8.

    >>> close_payload(1000, "bye")
    b'\\x03\\xe8bye'
    """
    return struct.pack("!H", code) + reason.encode()


def parse_close(payload: bytes) -> tuple[int, str]:
    """Split a CLOSE payload into ``(code, reason)``; an empty payload means 1005 (no status)."""
    if not payload:
        return 1005, ""
    if len(payload) < 2:
        raise FrameError("a close payload is empty or starts with a 2-byte code")
    (code,) = struct.unpack("!H", payload[:2])
    try:
        return code, payload[2:].decode()
    except UnicodeDecodeError as exc:
        raise FrameError(f"the close reason is not valid UTF-8 (byte {exc.start + 2}): a peer answers 1007") from None


def explain(data: bytes) -> str:
    """Describe a frame's header field by field, for reading bytes on screen."""
    header = parse_header(data)
    lines = [
        f"byte 0     {data[0]:08b}  FIN={int(header.fin)}  RSV=000  opcode={header.opcode:#x} ({header.opcode.name})",
        f"byte 1     {data[1]:08b}  MASK={int(header.masked)}  length={data[1] & 0x7F}",
    ]
    if data[1] & 0x7F == 126:
        lines.append(f"bytes 2-3  {data[2:4].hex(' ')}  16-bit length = {header.length}")
    elif data[1] & 0x7F == 127:
        lines.append(f"bytes 2-9  {data[2:10].hex(' ')}  64-bit length = {header.length}")
    if header.mask is not None:
        lines.append(f"bytes {header.size - 4}-{header.size - 1}  {header.mask.hex(' ')}  masking key")
    start = header.size
    shown = data[start : start + 8].hex(" ") + (" ..." if header.length > 8 else "")
    lines.append(f"then {header.length} payload bytes: {shown}")
    return "\n".join(lines)


def new_key() -> str:
    """A fresh ``Sec-WebSocket-Key``: 16 random bytes in base64 (what real clients send)."""
    return base64.b64encode(os.urandom(16)).decode()


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``key``: base64(SHA-1(key + GUID)).

    >>> accept_key("dGhlIHNhbXBsZSBub25jZQ==")
    's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
    """
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def upgrade_request(host: str, path: str = "/", key: str | None = None) -> bytes:
    """The HTTP request that opens a WebSocket (RFC 6455 section 4.1), without extensions.

    ``host`` is ``"host:port"``; ``key`` defaults to a fresh random one.
    """
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key or new_key()}",
        "Sec-WebSocket-Version: 13",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def parse_response(data: bytes) -> tuple[str, dict[str, str]]:
    """Split an HTTP response head into its status line and headers (names as sent).

    >>> parse_response(b"HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\n\\r\\n")
    ('HTTP/1.1 101 Switching Protocols', {'Upgrade': 'websocket'})
    """
    status, *lines = data.decode("iso-8859-1").rstrip("\r\n").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return status, headers
