"""Thread mode: blocking code in the caller cannot stall the server."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from websockets.sync.client import connect as sync_connect

import wslab
from wslab.servers import _registry

from .conftest import echo, free_port


def sync_roundtrip(uri: str, message: str = "hello") -> str:
    with sync_connect(uri, open_timeout=2) as ws:
        ws.send(message)
        return str(ws.recv(timeout=2))


def test_sync_client_without_any_event_loop() -> None:
    server = wslab.start_in_thread(echo)
    try:
        assert server.uri == f"ws://127.0.0.1:{server.port}"
        assert sync_roundtrip(server.uri) == "hello"
        server.show_blocking()
        assert server.transcript.lines[-1] == "client 1: closed 1000 (OK)"
    finally:
        server.stop_blocking()
    assert not any(t.name == "wslab-echo" for t in threading.enumerate())
    assert "echo" not in _registry


async def test_blocking_the_callers_loop_does_not_stall_a_threaded_server() -> None:
    server = wslab.start_in_thread(echo)
    # These blocking calls freeze this test's event loop; the server lives on another one.
    time.sleep(0.05)
    assert sync_roundtrip(server.uri) == "hello"
    await server.stop()


async def test_blocking_the_loop_does_stall_a_server_on_that_loop() -> None:
    server = await wslab.start(echo)
    with pytest.raises(TimeoutError):
        sync_roundtrip(server.uri)  # the handshake can never be answered: this loop is blocked
    await server.stop()


def test_threaded_server_stops_on_exit_of_with_block_and_frees_a_fixed_port() -> None:
    port = free_port()
    with wslab.start_in_thread(echo, port=port) as server:
        assert server.port == port
        assert sync_roundtrip(server.uri) == "hello"
    with wslab.start_in_thread(echo, port=port) as again:
        assert sync_roundtrip(again.uri) == "hello"


def test_rerun_replaces_a_threaded_server() -> None:
    first = wslab.start_in_thread(echo)
    second = wslab.start_in_thread(echo)
    assert _registry == {"echo": second}
    with pytest.raises(OSError):
        sync_roundtrip(first.uri)
    assert sync_roundtrip(second.uri) == "hello"
    second.stop_blocking()
    second.stop_blocking()  # idempotent


async def test_thread_mode_replaces_a_server_on_the_loop() -> None:
    port = free_port()
    await wslab.start(echo, port=port)
    threaded = wslab.start_in_thread(echo, port=port)
    assert sync_roundtrip(threaded.uri) == "hello"
    await threaded.stop()


async def test_threaded_connections_and_transcript() -> None:
    async def shout(websocket) -> None:  # type: ignore[no-untyped-def]
        async for message in websocket:
            print(f"heard {message}")
            await websocket.send(message.upper())

    server = wslab.start_in_thread(shout)
    with sync_connect(server.uri) as ws:
        ws.send("hi")
        assert ws.recv(timeout=2) == "HI"
        assert len(server.connections) == 1
    await server.settle()
    assert server.transcript.lines == [
        "client 1: connected to /",
        "client 1: heard hi",
        "client 1: closed 1000 (OK)",
    ]
    await server.stop()


def test_stop_blocking_leaves_no_thread_and_no_socket() -> None:
    from .conftest import open_fds

    fds_before = open_fds()
    server = wslab.start_in_thread(echo)
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(sync_connect(server.uri)) for _ in range(2)]
        clients[0].send("x")
        assert clients[0].recv(timeout=2) == "x"
        server.stop_blocking()
        assert [client.close_code for client in clients] == [1001, 1001]
    # the server's thread is gone (the sync clients' own keepalive threads may take a moment longer)
    assert not server._thread.is_alive()
    assert {t.name for t in threading.enumerate() if t.name.startswith("wslab-")} == set()
    assert open_fds() == fds_before


def test_old_style_code_through_nest_asyncio_reaches_both_kinds_of_server() -> None:
    """In a notebook-like running loop, nest_asyncio2 (the maintained fork of nest_asyncio) lets run_until_complete work; servers keep serving."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import asyncio, nest_asyncio2, wslab
        from websockets.asyncio.client import connect

        async def echo(websocket):
            async for message in websocket:
                await websocket.send(message)

        async def old_style_client(uri):
            async with connect(uri) as ws:
                await ws.send("old style")
                return await ws.recv()

        async def cell():  # stands for a notebook cell: the loop is already running
            on_loop = await wslab.start(echo)
            in_thread = wslab.start_in_thread(echo, name="threaded")
            pending = asyncio.sleep(0)
            try:
                asyncio.get_event_loop().run_until_complete(pending)
            except RuntimeError as exc:
                print("before:", exc)
                pending.close()
            nest_asyncio2.apply()
            for server in (on_loop, in_thread):
                print(asyncio.get_event_loop().run_until_complete(old_style_client(server.uri)))
            print(await wslab.stop_all())

        asyncio.run(cell())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.stdout.splitlines() == [
        "before: This event loop is already running",
        "old style",
        "old style",
        "['echo', 'threaded']",
    ], done.stderr
    assert done.stderr == ""
