"""Background servers on the running loop: start, stop, re-run replacement, stop_all, leaks."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK

import wslab
from wslab.servers import _registry

from .conftest import echo, free_port, open_fds

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts fds in /proc/self/fd")


async def roundtrip(uri: str, message: str = "hello") -> str:
    async with connect(uri) as ws:
        await ws.send(message)
        return str(await ws.recv())


async def test_start_listens_on_loopback_port_zero() -> None:
    server = await wslab.start(echo)
    try:
        assert server.host == "127.0.0.1"
        assert server.port > 0
        assert server.uri == f"ws://127.0.0.1:{server.port}"
        assert await roundtrip(server.uri) == "hello"
        assert wslab.running() == {"echo": server.uri}
    finally:
        await server.stop()


async def test_fixed_port() -> None:
    port = free_port()
    server = await wslab.start(echo, port=port)
    try:
        assert server.port == port
        assert await roundtrip(f"ws://127.0.0.1:{port}") == "hello"
    finally:
        await server.stop()


async def test_serve_keyword_arguments_reach_websockets() -> None:
    server = await wslab.start(echo, max_size=10)
    try:
        async with connect(server.uri) as ws:
            await ws.send("x" * 11)
            await ws.wait_closed()
        assert ws.close_code == 1009
    finally:
        await server.stop()


async def test_connections_are_visible_while_open() -> None:
    server = await wslab.start(echo)
    try:
        async with connect(server.uri) as first, connect(server.uri) as second:
            await first.send("a")
            await first.recv()
            await second.send("b")
            await second.recv()
            labels = sorted(server.label(c) for c in server.connections)
            assert labels == ["client 1", "client 2"]
        await server.settle()
        assert server.connections == set()
    finally:
        await server.stop()


async def test_stop_closes_clients_with_1001_and_is_idempotent() -> None:
    server = await wslab.start(echo)
    async with connect(server.uri) as ws:
        await server.stop()
        received = [message async for message in ws]  # ends quietly on 1001
        assert received == []
        assert ws.close_code == 1001
    await server.stop()  # a second stop is harmless
    assert "echo" not in _registry
    with pytest.raises(OSError):
        await roundtrip(server.uri)


@linux_only
async def test_stop_leaves_no_task_and_no_socket() -> None:
    await asyncio.sleep(0)
    tasks_before = asyncio.all_tasks()
    fds_before = open_fds()
    server = await wslab.start(echo)
    clients = [await connect(server.uri) for _ in range(3)]
    await clients[0].send("ping")
    await clients[0].recv()
    assert len(open_fds()) >= len(fds_before) + 7  # listener + 3 client and 3 server ends
    await server.stop()
    for client in clients:
        await client.wait_closed()
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == tasks_before
    assert open_fds() == fds_before


async def test_async_with_stops_the_server() -> None:
    async with wslab.start(echo) as server:
        assert await roundtrip(server.uri) == "hello"
    assert "echo" not in _registry
    with pytest.raises(OSError):
        await roundtrip(server.uri)


async def test_rerun_replaces_the_server_of_the_same_name() -> None:
    first = await wslab.start(echo)
    async with connect(first.uri) as ws:
        second = await wslab.start(echo)
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()
        assert ws.close_code == 1001
    assert _registry == {"echo": second}
    with pytest.raises(OSError):
        await roundtrip(first.uri)
    assert await roundtrip(second.uri) == "hello"
    await second.stop()


async def test_rerun_on_a_fixed_port_does_not_fail_with_address_in_use() -> None:
    port = free_port()
    await wslab.start(echo, port=port)
    again = await wslab.start(echo, port=port)
    assert again.port == port
    assert await roundtrip(again.uri) == "hello"
    await again.stop()


async def test_names_keep_servers_apart() -> None:
    one = await wslab.start(echo, name="one")
    two = await wslab.start(echo, name="two")
    assert set(wslab.running()) == {"one", "two"}
    assert await roundtrip(one.uri) == await roundtrip(two.uri) == "hello"
    assert sorted(await wslab.stop_all()) == ["one", "two"]


async def test_stop_all_stops_both_modes() -> None:
    on_loop = await wslab.start(echo)
    in_thread = wslab.start_in_thread(echo, name="threaded")
    assert sorted(await wslab.stop_all()) == ["echo", "threaded"]
    assert wslab.running() == {}
    for uri in (on_loop.uri, in_thread.uri):
        with pytest.raises(OSError):
            await roundtrip(uri)
    assert await wslab.stop_all() == []


async def test_handler_can_be_a_method() -> None:
    class Counter:
        def __init__(self) -> None:
            self.seen = 0

        async def handle(self, websocket) -> None:  # type: ignore[no-untyped-def]
            async for _ in websocket:
                self.seen += 1
                await websocket.send(str(self.seen))

    counter = Counter()
    server = await wslab.start(counter.handle)
    assert server.name == "handle"
    assert await roundtrip(server.uri) == "1"
    await server.stop()


def test_port_is_really_free_after_stop() -> None:
    async def scenario() -> int:
        server = await wslab.start(echo)
        await server.stop()
        return server.port

    port = asyncio.run(scenario())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # would raise EADDRINUSE if the listener leaked


async def test_before_stop_callbacks_run_before_the_close_frame() -> None:
    """What an application says as the server stops reaches each client before its 1001."""
    from websockets.asyncio.server import broadcast

    server = await wslab.start(echo)
    async with connect(server.uri, proxy=None) as client:
        await client.send("hi")
        assert await client.recv() == "hi"
        server.before_stop.append(lambda: broadcast(server.connections, "stopping: going away"))
        server.before_stop.append(lambda: 1 / 0)  # a failing one is recorded, and the stop goes on
        await server.stop()
        assert await client.recv() == "stopping: going away"
        await client.wait_closed()
        assert client.close_code == 1001
    assert "before_stop callback failed: ZeroDivisionError: division by zero" in server.transcript.lines


async def test_after_stop_callbacks_run_in_order_once_every_connection_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    import wslab.servers

    monkeypatch.setattr(wslab.servers, "AFTER_STOP", 0.2)
    server = await wslab.start(echo)
    seen: list[str] = []
    client = await connect(server.uri)

    async def first() -> None:
        seen.append(f"first: {len(server.connections)} open, client {client.state.name}")
        raise RuntimeError("broken cleanup")

    async def stuck() -> None:
        seen.append("stuck")
        await asyncio.Event().wait()

    async def last() -> None:
        seen.append("last")

    server.after_stop += [first, stuck, last]
    async with asyncio.timeout(3):
        await server.stop(close_timeout=1)
    assert seen == ["first: 0 open, client CLOSED", "stuck", "last"]
    assert "after_stop callback failed: RuntimeError: broken cleanup" in server.transcript.lines
    assert "after_stop callback failed: TimeoutError: " in server.transcript.lines
