"""Interop with aiohttp, an implementation nobody here wrote: its client against our servers and the chat,
and our client against its server (text, binary, compression, fragments, pings, close codes and reasons)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK

import wslab
from wslab.chat import ChatServer

from .conftest import echo

STEP = 2.0  # the most one expected message may take


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def receive(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    async with asyncio.timeout(STEP):
        return await ws.receive()


# ---------------------------------------------------------------- aiohttp's client, our servers


@pytest.mark.parametrize("compress", [0, 15], ids=["plain", "permessage-deflate"])
async def test_aiohttp_client_echo_text_binary_and_a_large_message(session: aiohttp.ClientSession, compress: int) -> None:
    async with wslab.start(echo) as server:
        async with session.ws_connect(server.uri, compress=compress) as ws:
            # asked for a 15-bit window, aiohttp accepts the 12 bits websockets offers by default (less memory)
            assert ws.compress == (12 if compress else 0)
            await ws.send_str("héllo ✓ 李白")
            assert (await receive(ws)).data == "héllo ✓ 李白"
            await ws.send_bytes(bytes(range(256)))
            assert (await receive(ws)).data == bytes(range(256))
            await ws.send_str("x" * 900_000)  # under max_size (1 MiB)
            assert len((await receive(ws)).data) == 900_000


async def test_aiohttp_client_ping_gets_a_pong(session: aiohttp.ClientSession) -> None:
    async with wslab.start(echo) as server:
        async with session.ws_connect(server.uri, autoping=False) as ws:
            await ws.ping(b"are you there")
            message = await receive(ws)
            assert (message.type, message.data) == (WSMsgType.PONG, b"are you there")


@pytest.mark.parametrize("code", [1000, 3000, 4000, 4999])
async def test_our_server_records_the_close_code_and_123_byte_reason_aiohttp_sends(session: aiohttp.ClientSession, code: int) -> None:
    reason = "é" * 61 + "x"  # 123 bytes of UTF-8: the most a close frame can carry
    assert len(reason.encode()) == 123
    async with wslab.start(echo) as server:
        async with session.ws_connect(server.uri) as ws:
            await ws.close(code=code, message=reason.encode())
        async with asyncio.timeout(STEP):
            while not any("closed" in line for line in server.transcript.lines):
                await asyncio.sleep(0.01)
    assert f"client 1: closed {code}" in server.transcript.lines[-1]
    assert reason in server.transcript.lines[-1]


async def test_aiohttp_client_sees_1001_when_our_server_stops(session: aiohttp.ClientSession) -> None:
    server = await wslab.start(echo)
    async with session.ws_connect(server.uri) as ws:
        # aiohttp answers a close frame only while the application reads: stop and read together
        stopping = asyncio.create_task(server.stop())
        message = await receive(ws)
        assert message.type == WSMsgType.CLOSE and message.data == 1001
        async with asyncio.timeout(STEP):
            await stopping
    assert server.transcript.lines[-1] == "client 1: closed 1000 (OK), answering the server's 1001 (going away)"


async def test_an_aiohttp_client_that_does_not_read_holds_stop_for_close_timeout_only(session: aiohttp.ClientSession) -> None:
    server = await wslab.start(echo, close_timeout=0.5)
    async with session.ws_connect(server.uri):
        async with asyncio.timeout(STEP):
            await server.stop()  # nobody reads the close frame on aiohttp's side: aborted after 0.5 s
    assert "client 1: aborted after 0.5 s (no answer to the close frame)" in server.transcript.lines


async def test_an_origin_the_server_does_not_allow_gets_403_in_aiohttp(session: aiohttp.ClientSession) -> None:
    async with wslab.start(echo, origins=["https://school.example"]) as server:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(server.uri, origin="https://evil.example")
        assert refused.value.status == 403
        async with session.ws_connect(server.uri, origin="https://school.example") as ws:
            await ws.send_str("ok")
            assert (await receive(ws)).data == "ok"


async def test_aiohttp_in_the_chat_a_lone_surrogate_costs_only_its_sender_an_error(session: aiohttp.ClientSession) -> None:
    chat = ChatServer()
    await chat.start()
    try:
        async with session.ws_connect(chat.ws_uri) as ada, session.ws_connect(chat.ws_uri) as bob:
            for ws, nick in ((ada, "ada"), (bob, "bob")):
                assert json.loads((await receive(ws)).data)["type"] == "hello"
                await ws.send_str(json.dumps({"v": 1, "type": "join", "room": "lobby", "nick": nick}))
                assert json.loads((await receive(ws)).data)["type"] == "joined"
            assert json.loads((await receive(ada)).data)["type"] == "presence"  # bob joined
            await ada.send_str('{"v": 1, "type": "say", "text": "\\ud800"}')  # JSON for a lone surrogate
            error = json.loads((await receive(ada)).data)
            assert error["type"] == "error" and error["code"] in ("bad-json", "bad-field"), error
            await ada.send_str(json.dumps({"v": 1, "type": "say", "text": "still here"}))
            for ws in (ada, bob):
                message = json.loads((await receive(ws)).data)
                assert (message["type"], message["text"]) == ("message", "still here")
    finally:
        await chat.server.stop()  # type: ignore[union-attr]


# ---------------------------------------------------------------- our client, aiohttp's server


async def aiohttp_server(handler: object) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"ws://127.0.0.1:{port}/"


async def aiohttp_echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=0.2)  # aiohttp pings us every 0.2 s: our client must answer
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT and message.data.startswith("close "):
            _, code, reason = message.data.split(" ", 2)
            await ws.close(code=int(code), message=reason.encode())
        elif message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            await ws.send_str(message.data) if message.type == WSMsgType.TEXT else await ws.send_bytes(message.data)
    return ws


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_our_client_against_aiohttp_server_text_binary_fragments_and_its_pings(compression: str | None) -> None:
    runner, uri = await aiohttp_server(aiohttp_echo)
    try:
        async with connect(uri, compression=compression, proxy=None) as ws:
            await ws.send("héllo")
            assert await asyncio.wait_for(ws.recv(), STEP) == "héllo"
            await ws.send(["frag", "ments", " ✓"])  # one message in three frames
            assert await asyncio.wait_for(ws.recv(), STEP) == "fragments ✓"
            await ws.send(b"\x00\xff" * 1000)
            assert await asyncio.wait_for(ws.recv(), STEP) == b"\x00\xff" * 1000
            await asyncio.sleep(0.5)  # time is the point: aiohttp's heartbeat closes a peer that does not pong
            await ws.send("still open")
            assert await asyncio.wait_for(ws.recv(), STEP) == "still open"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("code", "raised"), [(1000, ConnectionClosedOK), (1001, ConnectionClosedOK),
                                              (1011, ConnectionClosedError), (4000, ConnectionClosedError)])
async def test_our_client_sees_each_close_code_and_reason_from_aiohttp(code: int, raised: type[Exception]) -> None:
    runner, uri = await aiohttp_server(aiohttp_echo)
    try:
        async with connect(uri, proxy=None) as ws:
            await ws.send(f"close {code} bye from aiohttp")
            with pytest.raises(raised) as closed:
                await asyncio.wait_for(ws.recv(), STEP)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (code, "bye from aiohttp")
    finally:
        await runner.cleanup()
