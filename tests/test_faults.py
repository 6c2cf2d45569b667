"""Each fault in wslab.faults produces, for real, the failure the chapters describe."""

from __future__ import annotations

import asyncio
import os

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

import wslab
from wslab import faults

from .conftest import echo


async def hold(websocket: ServerConnection) -> None:
    await websocket.wait_closed()


async def test_a_stalled_client_fills_the_servers_write_buffer_and_keepalive_does_not_free_it() -> None:
    server = await wslab.start(hold, ping_interval=0.2, ping_timeout=0.2, close_timeout=0.5)
    async with faults.stalled_client(server.uri):
        async with asyncio.timeout(5):
            while not server.connections:
                await asyncio.sleep(0.01)
        (connection,) = server.connections
        for _ in range(100):
            broadcast(server.connections, "x" * 100_000)
        await asyncio.sleep(1.0)  # five keepalive periods
        assert connection.transport.get_write_buffer_size() > 5_000_000
        assert connection.state.name == "OPEN"  # ping() waits for drain() before its timeout starts
        await server.stop()


async def test_a_server_that_aborts_mid_message_ends_async_for_with_an_error() -> None:
    server = await wslab.start(faults.abort_mid_message(after=3))
    got = []
    with pytest.raises(ConnectionClosedError) as caught:
        async with connect(server.uri, proxy=None) as ws:
            await ws.send("start")
            async for message in ws:
                got.append(message)
    assert got == ["message 1", "message 2", "message 3"]
    assert caught.value.rcvd is None  # no close frame: 1006 for the client
    await server.stop()


async def test_an_error_in_the_body_leaves_the_reconnect_loop_unless_caught() -> None:
    """`async for ws in connect(uri)` retries connecting; it does not survive an exception in its body."""
    server = await wslab.start(faults.abort_mid_message(after=1))

    connections = 0
    with pytest.raises(ConnectionClosedError):
        async for ws in connect(server.uri, proxy=None):
            connections += 1
            await ws.send("start")
            async for _ in ws:
                pass
    assert connections == 1  # the loop ended after the first drop

    connections = 0
    async for ws in connect(server.uri, proxy=None):
        connections += 1
        try:
            await ws.send("start")
            async for _ in ws:
                pass
        except ConnectionClosed:
            if connections == 3:
                break
            continue  # the documented pattern: reconnect
    assert connections == 3
    await server.stop()


async def test_a_proxy_in_the_environment_breaks_a_loopback_client_until_turned_off() -> None:
    server = await wslab.start(echo)
    with faults.proxy_in_environment():
        assert os.environ["http_proxy"] == "http://127.0.0.1:9"
        with pytest.raises(OSError):  # connect() went to the proxy, which is not there
            async with connect(server.uri, open_timeout=2):
                pass
        async with connect(server.uri, proxy=None) as ws:  # fix 1: no proxy for this client
            await ws.send("direct")
            assert await ws.recv() == "direct"
        os.environ["no_proxy"] = "127.0.0.1,localhost"  # fix 2: tell every client that loopback is direct
        async with connect(server.uri) as ws:
            await ws.send("no_proxy")
            assert await ws.recv() == "no_proxy"
    assert "http_proxy" not in os.environ or os.environ["http_proxy"] != "http://127.0.0.1:9"
    await server.stop()


@pytest.mark.parametrize("variable", ["ws_proxy", "socks_proxy", "https_proxy", "http_proxy"])
async def test_each_proxy_variable_websockets_reads_is_set_alone_and_restored(variable: str) -> None:
    server = await wslab.start(echo)
    os.environ["socks_proxy"] = "socks5h://proxy.example:1080"  # one of the hub's own, kept outside the block
    try:
        url = "socks5h://127.0.0.1:9" if variable == "socks_proxy" else "http://127.0.0.1:9"
        with faults.proxy_in_environment(url, [variable]):
            assert [name for name in os.environ if name.lower().endswith("_proxy")] == [variable]
            # a SOCKS proxy needs python-socks, which this project does not install: the error names it
            with pytest.raises(ImportError if variable == "socks_proxy" else OSError, match="python-socks|Connect call failed"):
                async with connect(server.uri, open_timeout=2):
                    pass
            async with connect(server.uri, proxy=None) as ws:
                await ws.send("direct")
                assert await ws.recv() == "direct"
        assert os.environ["socks_proxy"] == "socks5h://proxy.example:1080"  # restored
        assert variable == "socks_proxy" or variable not in os.environ
    finally:
        os.environ.pop("socks_proxy", None)
        await server.stop()


async def test_a_paused_process_accepts_connections_and_answers_nothing_until_continued() -> None:
    import subprocess
    import sys

    # a TCP echo in another process: the kernel accepts for it even while it is stopped
    script = "import socket; s = socket.create_server(('127.0.0.1', 0)); print(s.getsockname()[1], flush=True); c, _ = s.accept(); c.sendall(c.recv(10))"
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        port = int(child.stdout.readline())  # type: ignore[union-attr]
        with faults.paused_process(child.pid):
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)  # accepted
            writer.write(b"hello")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(10), 0.3)  # nothing answers
        assert await asyncio.wait_for(reader.read(10), 2) == b"hello"  # continued: it answers
        writer.close()
    finally:
        child.kill()
        child.wait(5)
