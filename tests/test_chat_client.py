"""wslab's own chat clients: straight to a chat on this machine whatever the proxy variables say, and
``ChatClient`` leaves no connection open when the server's hello does not come."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

import wslab
from wslab import faults
from wslab.chat import ChatClient, ChatServer
from wslab.chat.client import is_loopback, loopback_connect
from wslab.chat.load import run_crowd
from wslab.frames import accept_key


@pytest.mark.parametrize(
    ("uri", "loopback"),
    [
        ("ws://127.0.0.1:8000/ws", True),
        ("ws://127.1.2.3:8000/", True),
        ("ws://[::1]:8000/", True),
        ("ws://localhost:8000/", True),
        ("wss://chat.example.org/ws", False),
        ("ws://10.0.0.1:8000/", False),
        ("ws://localhost.example.org/", False),
    ],
)
def test_is_loopback(uri: str, loopback: bool) -> None:
    assert is_loopback(uri) is loopback


async def test_with_a_proxy_set_the_chat_clients_reach_a_local_chat() -> None:
    chat = ChatServer(history=0)
    server = await chat.start(name="chat-proxy", compression=None)
    try:
        with faults.proxy_in_environment():
            async with ChatClient(chat.ws_uri, timeout=1.0) as ada:
                assert ada.hello["type"] == "hello"
                assert (await ada.join("lobby", "ada"))["type"] == "joined"
            result = await run_crowd(chat.ws_uri, clients=3, senders=1, per_sender=1, timeout=10)
        assert [len(received) for received in result.received] == [1, 1, 1]
    finally:
        await server.stop()


async def test_a_remote_host_keeps_the_proxy_of_the_environment() -> None:
    with faults.proxy_in_environment():
        with pytest.raises(OSError, match=r"'127\.0\.0\.1', 9"):  # it went to the proxy, which is not there
            await loopback_connect("ws://chat.example.invalid/ws", open_timeout=2)


async def test_an_explicit_proxy_wins_over_the_loopback_default() -> None:
    with pytest.raises(OSError, match=r"'127\.0\.0\.1', 9"):  # port 9, the proxy's, not the server's port 1
        await loopback_connect("ws://127.0.0.1:1/", proxy="http://127.0.0.1:9", open_timeout=2)


async def never_says_hello(websocket: Any) -> None:
    async for _ in websocket:  # reads, answers the close, but never sends a hello
        pass


async def test_no_hello_closes_the_connection_before_the_timeout_error() -> None:
    server = await wslab.start(never_says_hello, name="no-hello")
    try:
        with pytest.raises(TimeoutError, match="no hello from .* within 0.3 s: is it the chat server"):
            await ChatClient.connect(server.uri, timeout=0.3)
        await server.wait_idle(2)  # the client left: nothing is connected any more
        assert server.transcript.lines[-1] == "client 1: closed 1000 (OK)"
    finally:
        await server.stop()


async def test_not_json_closes_the_connection_too() -> None:
    async def says_hi(websocket: Any) -> None:
        await websocket.send("hi!")
        await never_says_hello(websocket)

    server = await wslab.start(says_hi, name="not-json")
    try:
        with pytest.raises(ValueError):
            async with ChatClient(server.uri, timeout=0.3):
                pass
        await server.wait_idle(2)
        assert server.transcript.lines[-1] == "client 1: closed 1000 (OK)"
    finally:
        await server.stop()


async def test_a_server_that_ignores_the_close_is_aborted_within_the_timeout() -> None:
    """Handshake, then silence: no hello and no answer to the close frame. The client still ends the TCP connection."""
    ended = asyncio.get_running_loop().create_future()

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        key = next(line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("sec-websocket-key:"))
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode()
        )
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):  # reads the close frame, never answers it
                pass
        ended.set_result(time.monotonic())
        writer.close()

    raw = await asyncio.start_server(deaf, "127.0.0.1", 0)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="no hello"):
            await ChatClient.connect(f"ws://127.0.0.1:{raw.sockets[0].getsockname()[1]}", timeout=0.3)
        async with asyncio.timeout(2):
            assert await ended - started < 0.3 + 0.3 + 0.5  # the hello's wait, the close's wait, a busy machine
    finally:
        raw.close()
        await raw.wait_closed()


async def test_a_server_that_never_answers_the_handshake_fails_within_the_timeout() -> None:
    async with faults.silent_server() as port:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await ChatClient.connect(f"ws://127.0.0.1:{port}", timeout=0.3)
        assert time.monotonic() - started < 1.5
