"""A slow consumer against the two outbox policies of chapter 04 (drop the oldest, or disconnect with 1008), and
chapter 02's bounded shutdown of a bare websockets server."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosedError
from websockets.protocol import State

import wslab
from wslab import Outbox

BIG = "x" * 65536  # big enough to fill the socket buffers quickly


async def test_a_slow_consumer_is_disconnected_with_1008() -> None:
    gave_up = asyncio.Event()

    async def producer(websocket) -> None:  # type: ignore[no-untyped-def]
        async with Outbox(websocket, maxsize=8) as outbox:
            for n in range(1000):
                if not outbox.put(f"{n:04d}{BIG}"):
                    gave_up.set()
                    await websocket.close(1008, "too slow")
                    return
                await asyncio.sleep(0)  # let the writer run, as other clients' events would

    async with wslab.start(producer, compression=None) as server:
        async with connect(server.uri, max_queue=1, compression=None) as ws:
            await asyncio.wait_for(gave_up.wait(), 5)  # the client has not read anything yet
            received = []
            with pytest.raises(ConnectionClosedError) as caught:
                async for message in ws:
                    received.append(message[:4])
        assert caught.value.rcvd is not None and caught.value.rcvd.code == 1008
        assert 0 < len(received) < 1000
        assert received == [f"{n:04d}" for n in range(len(received))]  # in order, nothing skipped


async def test_a_slow_consumer_loses_the_oldest_messages_but_memory_stays_bounded() -> None:
    done = asyncio.Event()
    outboxes: list[Outbox] = []

    async def producer(websocket) -> None:  # type: ignore[no-untyped-def]
        async with Outbox(websocket, maxsize=8) as outbox:
            outboxes.append(outbox)
            for n in range(300):
                outbox.put(f"{n:04d}{BIG}")
                assert len(outbox) <= 8
                await asyncio.sleep(0)
            done.set()
            await websocket.wait_closed()

    # The client leaves with megabytes still unread: do not wait 10 s for closing handshakes.
    async with wslab.start(producer, compression=None, close_timeout=0.1) as server:
        async with connect(server.uri, max_queue=1, compression=None, close_timeout=0.1) as ws:
            await asyncio.wait_for(done.wait(), 5)
            (outbox,) = outboxes
            assert outbox.dropped > 0
            first = await ws.recv()
            assert first.startswith("0000")


async def test_bare_server_shutdown_waits_for_a_stalled_client_until_it_is_aborted() -> None:
    """Chapter 02's shutdown recipe: websockets' own close() + wait_closed() does not end while a client stops
    reading (here with keepalive off, nothing ends it); aborting the connections taken before close() does."""
    arrived: asyncio.Queue[ServerConnection] = asyncio.Queue()

    async def listen(websocket: ServerConnection) -> None:
        arrived.put_nowait(websocket)
        await websocket.wait_closed()

    server = await serve(listen, "127.0.0.1", 0, compression=None, ping_interval=None)
    port = server.sockets[0].getsockname()[1]
    async with wslab.faults.stalled_client(f"ws://127.0.0.1:{port}"):
        stuck = await asyncio.wait_for(arrived.get(), 5)
        for _ in range(200):
            broadcast([stuck], BIG * 2)
        connections = list(server.connections)
        server.close()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(server.wait_closed()), 1.5)
        assert server.connections == set() and stuck.state is State.CLOSING  # closing, so no longer listed
        for connection in connections:
            connection.transport.abort()
        await asyncio.wait_for(server.wait_closed(), 1.0)
    assert stuck.state is State.CLOSED


async def test_leaving_async_with_serve_waits_for_a_stalled_client_too() -> None:
    """Chapter 02: ``async with serve(...)`` closes on the way out, with the same unbounded wait."""
    arrived: asyncio.Queue[ServerConnection] = asyncio.Queue()
    leave = asyncio.Event()

    async def listen(websocket: ServerConnection) -> None:
        arrived.put_nowait(websocket)
        await websocket.wait_closed()

    async def run_server() -> None:
        async with serve(listen, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
            ports.put_nowait(server.sockets[0].getsockname()[1])
            await leave.wait()

    ports: asyncio.Queue[int] = asyncio.Queue()
    running = asyncio.create_task(run_server())
    port = await asyncio.wait_for(ports.get(), 5)
    async with wslab.faults.stalled_client(f"ws://127.0.0.1:{port}"):
        stuck = await asyncio.wait_for(arrived.get(), 5)
        for _ in range(200):
            broadcast([stuck], BIG * 2)
        leave.set()
        done, _ = await asyncio.wait([running], timeout=1.5)
        assert not done, "async with serve() returned although a client could not take the close frame"
        stuck.transport.abort()
        await asyncio.wait_for(running, 1.0)
