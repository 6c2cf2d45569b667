"""Checks for chapter 01 (basics): frames sent and read by hand on a raw connection."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from websockets.exceptions import ConnectionClosed

from ..frames import Frame, Opcode, parse_response, upgrade_request
from ..servers import BackgroundServer
from .core import Fail, Run, Verdict, require_coroutine_function, run

__all__ = ["binary_echo", "two_fragments", "long_ping"]


async def _raw_echo(run: Run) -> tuple[BackgroundServer, list[Any], asyncio.StreamReader, asyncio.StreamWriter]:
    """An echo server that records what it receives, and a raw connection to it, handshake done."""
    received: list[Any] = []

    async def recording_echo(websocket: Any) -> None:
        with contextlib.suppress(ConnectionClosed):  # the raw connection may end without a close frame
            async for message in websocket:
                received.append(message)
                await websocket.send(message)

    server = await run.start(recording_echo, compression=None, ping_interval=None)
    reader, writer = await asyncio.open_connection(server.host, server.port)

    async def close() -> None:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    run.cleanups.append(close)
    writer.write(upgrade_request(f"{server.host}:{server.port}", "/check"))
    status, _ = parse_response(await reader.readuntil(b"\r\n\r\n"))
    if " 101 " not in status + " ":
        raise Fail("the check's own handshake failed; run the chapter's setup cell again", got=status)
    return server, received, reader, writer


async def _call_raw(fn: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, waiting: str) -> Any:
    try:
        async with asyncio.timeout(2):
            return await fn(reader, writer)
    except TimeoutError:
        raise Fail(waiting, got="your function was still waiting after 2 s") from None


async def _server_closed(server: BackgroundServer, writer: asyncio.StreamWriter) -> str:
    """How the server's side of the raw connection ended (from its transcript)."""
    writer.close()
    with contextlib.suppress(Exception):
        await server.wait_idle(1)
    return next((line.split(": ", 1)[1] for line in server.transcript.lines if ": closed " in line), "")


async def binary_echo(fn: Any) -> Verdict:
    """Chapter 01, exercise 1: ``await fn(reader, writer)`` sends bytes(range(10)) in a masked BINARY frame
    and returns the frame the echo server sends back."""
    payload = bytes(range(10))

    async def body(run: Run) -> str:
        require_coroutine_function(fn, "a coroutine function", "binary_echo(reader, writer)")
        server, received, reader, writer = await _raw_echo(run)
        frame = await _call_raw(fn, reader, writer, "send one frame, then read exactly one with read_frame(reader)")
        closed = await _server_closed(server, writer)
        if received != [payload]:
            hint = "send encode_frame(Opcode.BINARY, bytes(range(10)), mask=...)"
            if not received and "1002" in closed:
                hint = "the server closed with 1002 (protocol error): a client must mask, pass mask=b'....' (4 bytes)"
            elif received and isinstance(received[0], str):
                hint = "that was a TEXT frame: use Opcode.BINARY"
            raise Fail(hint, got=f"the server received {received} ({closed})", expected=f"the server receives {payload!r}")
        if not isinstance(frame, Frame):
            raise Fail("return the frame you read: `return await read_frame(reader)`", got=repr(frame), expected="a Frame")
        if frame.opcode != Opcode.BINARY or frame.payload != payload or frame.mask is not None:
            raise Fail("read the echo with read_frame(reader)", got=str(frame), expected=f"BINARY fin=1 unmasked, {payload!r}")
        return "a masked BINARY frame went out, an unmasked one came back"

    return await run("binary_echo", body)


async def two_fragments(fn: Any) -> Verdict:
    """Chapter 01, exercise 2: ``await fn(reader, writer)`` sends "Hel" (TEXT, fin=False) and "lo" (CONT,
    fin=True), then returns the list of frames the echo server sends back."""

    async def body(run: Run) -> str:
        require_coroutine_function(fn, "a coroutine function", "two_fragments(reader, writer)")
        server, received, reader, writer = await _raw_echo(run)
        frames = await _call_raw(
            fn, reader, writer,
            "the server echoes whole messages, not frames: how many frames does one message come back in?",
        )
        closed = await _server_closed(server, writer)
        if received != ["Hello"]:
            hint = "first encode_frame(Opcode.TEXT, b'Hel', fin=False, mask=...), then encode_frame(Opcode.CONT, b'lo', mask=...)"
            if received == ["Hel", "lo"] or received == ["Hel"]:
                hint = "the first frame needs fin=False, or the server takes it as a whole message"
            elif "1002" in closed:
                hint = f"the server closed with {closed.removeprefix('closed ')}: the second frame must be a CONT frame, both masked"
            raise Fail(hint, got=f"the server received {received}", expected="the server receives one message, 'Hello'")
        if not isinstance(frames, list) or not all(isinstance(f, Frame) for f in frames):
            raise Fail("return a list of the frames you read with read_frame(reader)", got=repr(frames), expected="[Frame(...)]")
        if len(frames) != 1 or frames[0].opcode != Opcode.TEXT or frames[0].payload != b"Hello" or not frames[0].fin:
            raise Fail("the echo is one whole message", got=[str(f) for f in frames], expected="one frame: TEXT fin=1 unmasked, 'Hello'")
        return "two frames went out, one message 'Hello' came back in one frame"

    return await run("two_fragments", body)


async def long_ping(fn: Any) -> Verdict:
    """Chapter 01, exercise 3: ``await fn(reader, writer)`` sends a PING with a 126-byte payload and returns
    the server's close ``(code, reason)`` from ``parse_close``."""

    async def body(run: Run) -> str:
        require_coroutine_function(fn, "a coroutine function", "long_ping(reader, writer)")
        server, _, reader, writer = await _raw_echo(run)
        result = await _call_raw(fn, reader, writer, "after the PING, read one frame: the server's CLOSE")
        closed = await _server_closed(server, writer)
        if "1002" not in closed:
            raise Fail(
                "send encode_frame(Opcode.PING, bytes(126), mask=...): control frames carry at most 125 bytes",
                got=f"the server: {closed or 'still open'}", expected="the server closes with 1002",
            )
        if isinstance(result, Frame):
            raise Fail("return parse_close(frame.payload), not the frame", got=str(result), expected="(1002, '...')")
        if not (isinstance(result, tuple) and len(result) == 2 and result[0] == 1002 and isinstance(result[1], str)):
            raise Fail("return parse_close(frame.payload) of the CLOSE frame you read", got=repr(result), expected="(1002, '...')")
        return f"the server closed with {result[0]} ({result[1]})"

    return await run("long_ping", body)
