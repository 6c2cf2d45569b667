"""Chapter 01's claims that its cells do not show: each one produced here against a real server."""

from __future__ import annotations

import asyncio

import pytest

import wslab
from wslab.frames import FrameError, Opcode, encode_frame, parse_response, read_frame, read_frame_bytes, upgrade_request

from .conftest import echo

MASK = bytes.fromhex("37fa213d")


async def open_raw(server: wslab.BackgroundServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(upgrade_request(f"{server.host}:{server.port}", "/raw"))
    status, _ = parse_response(await reader.readuntil(b"\r\n\r\n"))
    assert status == "HTTP/1.1 101 Switching Protocols"
    return reader, writer


@pytest.mark.parametrize(("payload", "quiet"), [(b"", True), (b"\x03\xe8", True), (b"\x03\xe9", True), (b"\x0f\xa0", False)])
async def test_async_for_ends_quietly_on_1000_1001_and_a_close_without_code(payload: bytes, quiet: bool) -> None:
    """'it ends quietly only on 1000, 1001, or a close frame without a code, 1005'; 4000 is an error."""
    async with wslab.start(echo, compression=None) as server:
        reader, writer = await open_raw(server)
        writer.write(encode_frame(Opcode.CLOSE, payload, mask=MASK))
        answer = await read_frame(reader)
        assert answer.opcode is Opcode.CLOSE
        writer.close()
        await server.wait_idle()
        failed = [line for line in server.transcript.lines if "connection handler failed" in line]
        assert (failed == []) is quiet, server.transcript.lines


async def test_read_frame_bytes_refuses_a_huge_length_before_waiting_for_it() -> None:
    """'a peer may announce up to 2**63 bytes': the reader refuses at once instead of waiting for them."""
    reader = asyncio.StreamReader()
    reader.feed_data(bytes([0x82, 0xFF]) + (2**63 - 1).to_bytes(8, "big") + MASK)  # a header, and no payload
    async with asyncio.timeout(1):
        with pytest.raises(FrameError, match="more than max_size=1048576"):
            await read_frame_bytes(reader)
