"""stop() never hangs, whatever the clients do: each fault below held it for ever (or 10 s) before."""

from __future__ import annotations

import asyncio
import re
import socket
import time

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, broadcast

import wslab
from wslab import faults

from .conftest import echo

BOUND = 1.0  # the margin over close_timeout that a stop may take


async def hold(websocket: ServerConnection) -> None:
    await websocket.wait_closed()


async def stall_with_data(server: wslab.BackgroundServer) -> None:
    """What the issue reproduced: 200 x 100 kB broadcast to a client that stopped reading."""
    async with asyncio.timeout(5):
        while not server.connections:
            await asyncio.sleep(0.01)
    first = [c for c in server.connections if server.label(c) == "client 1"]  # the stalled one
    payload = "x" * 100_000
    for _ in range(200):
        broadcast(first, payload)


async def test_a_client_that_stopped_reading_is_aborted_within_close_timeout() -> None:
    server = await wslab.start(hold, ping_interval=0.5, ping_timeout=0.5)
    async with faults.stalled_client(server.uri):
        await stall_with_data(server)
        await asyncio.sleep(1.5)  # three keepalive periods: websockets' own ping does not free it
        assert len(server.connections) == 1, "keepalive closed it: the fault did not happen"
        started = time.monotonic()
        await server.stop(close_timeout=1.0)
        took = time.monotonic() - started
    assert took < 1.0 + BOUND, f"stop() took {took:.1f} s"
    aborted = [line for line in server.transcript.lines if "aborted" in line]
    assert len(aborted) == 1 and re.fullmatch(r"client 1: aborted after 1\.\d s \(not reading, \d+ MB unsent\)", aborted[0])


async def test_a_client_that_answers_close_but_keeps_its_socket_is_aborted() -> None:
    server = await wslab.start(hold, close_timeout=0.5)
    async with faults.lingering_client(server.uri):
        async with asyncio.timeout(5):
            while not server.connections:
                await asyncio.sleep(0.01)
        started = time.monotonic()
        await server.stop()  # the close_timeout given to start()
        took = time.monotonic() - started
    assert took < 0.5 + BOUND, f"stop() took {took:.1f} s"
    assert "client 1: aborted after 0.5 s (it answered the close frame but kept its TCP connection open)" in (
        server.transcript.lines
    )


def test_stop_blocking_is_bounded_too() -> None:
    """Thread mode, from sync code: the lingering client held stop_blocking() for the default 10 s."""

    async def scenario() -> float:
        server = wslab.start_in_thread(hold, close_timeout=0.5)
        async with faults.lingering_client(server.uri):
            while not server.connections:
                await asyncio.sleep(0.01)
            started = time.monotonic()
            await asyncio.to_thread(server.stop_blocking)
            return time.monotonic() - started

    took = asyncio.run(scenario())
    assert took < 0.5 + BOUND, f"stop_blocking() took {took:.1f} s"


async def test_a_handler_that_ignores_the_close_is_cancelled() -> None:
    async def deaf(websocket: ServerConnection) -> None:
        await asyncio.sleep(3600)  # never reads, never returns

    server = await wslab.start(deaf, close_timeout=0.3)
    async with connect(server.uri, proxy=None) as client:
        started = time.monotonic()
        await server.stop()
        took = time.monotonic() - started
        assert client.close_code == 1001
    assert took < 0.3 + BOUND, f"stop() took {took:.1f} s"
    assert "a handler was cancelled: it did not return after its connection closed" in server.transcript.lines


async def test_a_connection_that_never_sends_its_handshake_does_not_hold_stop() -> None:
    """3.12's asyncio.Server.wait_closed() waits for every TCP connection, even one before the handshake."""
    server = await wslab.start(echo, close_timeout=0.3, open_timeout=30)
    with socket.create_connection(("127.0.0.1", server.port)):
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await server.stop()
        took = time.monotonic() - started
    assert took < 0.3 + BOUND, f"stop() took {took:.1f} s"


async def test_stop_all_is_bounded_with_a_stalled_client() -> None:
    server = await wslab.start(hold, close_timeout=0.5)
    async with faults.stalled_client(server.uri):
        await stall_with_data(server)
        started = time.monotonic()
        assert await wslab.stop_all() == ["hold"]
        took = time.monotonic() - started
    assert took < 0.5 + BOUND, f"stop_all() took {took:.1f} s"


async def test_a_good_client_beside_a_stalled_one_still_gets_1001() -> None:
    server = await wslab.start(hold, close_timeout=0.5)
    async with faults.stalled_client(server.uri), connect(server.uri, proxy=None) as good:
        await stall_with_data(server)
        await server.stop()
        assert good.close_code == 1001
