"""Servers never mix: each has its own logger, names refuse another kind, and a stop always ends.

Each test reproduces a fault first seen by hand: two servers sharing a logger, a thread-mode server whose loop
is blocked holding stop_all() for ever, a connection in its opening handshake holding stop() (3.12) or left
open (3.11).
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import threading
import time

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosedError

import wslab
from wslab.servers import NameTakenError, _registry

from .conftest import echo, open_fds


async def boom(websocket: ServerConnection) -> None:
    await websocket.recv()
    raise ValueError("boom in the first server")


async def test_servers_whose_names_differ_in_punctuation_keep_their_errors_apart() -> None:
    first = await wslab.start(boom, name="echo 1")
    second = await wslab.start(boom, name="echo_1")
    async with connect(first.uri, proxy=None) as ws:
        await ws.send("x")
        await ws.wait_closed()
    await first.settle()
    assert "client 1: connection handler failed: ValueError: boom in the first server" in first.transcript.lines
    assert second.transcript.lines == []  # it used to receive the first server's error too
    names = [first._logger_name, second._logger_name]
    assert names == ["websockets.server.wslab.echo_1", "websockets.server.wslab.echo_1-2"]
    await wslab.stop_all()
    again = await wslab.start(boom, name="echo_1")  # a stopped server's logger is free again
    assert again._logger_name == "websockets.server.wslab.echo_1"
    await again.stop()


async def test_a_rerun_does_not_leave_the_old_transcript_on_the_logger() -> None:
    first = await wslab.start(boom, name="rerun")
    second = await wslab.start(boom, name="rerun")  # replaces the first, as a re-run cell does
    assert first._logger_name == second._logger_name == "websockets.server.wslab.rerun"
    async with connect(second.uri, proxy=None) as ws:
        await ws.send("x")
        await ws.wait_closed()
    await second.settle()
    assert any("connection handler failed" in line for line in second.transcript.lines)
    assert not any("connection handler failed" in line for line in first.transcript.lines)
    await second.stop()


async def test_a_thread_mode_server_refuses_a_name_a_service_of_another_kind_holds() -> None:
    class Other:
        """Stands for a child process registered under a name (services register the same way)."""

        name, port, kind = "shared", 0, "a chat process (services.start_chat)"

        async def stop(self) -> None:
            _registry.pop(self.name, None)

        def _stop_soon(self, close_timeout: float | None = None) -> None:
            _registry.pop(self.name, None)

    other = Other()
    _registry["shared"] = other
    try:
        with pytest.raises(NameTakenError, match=r"'shared' is taken by a chat process .*\(name='shared-2'"):
            wslab.start_in_thread(echo, name="shared")
        with pytest.raises(NameTakenError, match=r"stop it"):
            await wslab.start(echo, name="shared")
        assert _registry["shared"] is other  # nothing was stopped
    finally:
        await other.stop()
    threaded = wslab.start_in_thread(echo, name="shared")  # the same kind still replaces: loop mode after thread mode
    on_loop = await wslab.start(echo, name="shared")
    assert _registry == {"shared": on_loop} and threaded._stopped
    await on_loop.stop()


def blocking_handler(release: threading.Event, blocked: threading.Event):  # type: ignore[no-untyped-def]
    async def handler(websocket: ServerConnection) -> None:
        async for _ in websocket:
            blocked.set()
            release.wait(30)  # blocking code in a handler: its loop (the server's thread) stops dead

    return handler


async def test_stop_all_is_bounded_when_a_thread_mode_servers_loop_is_blocked() -> None:
    release, blocked = threading.Event(), threading.Event()
    fds_before = open_fds()
    server = wslab.start_in_thread(blocking_handler(release, blocked), name="blocked", close_timeout=0.5)
    port = server.port
    try:
        client = await connect(server.uri, proxy=None)
        await client.send("go")
        assert await asyncio.to_thread(blocked.wait, 5)
        started = time.monotonic()
        assert await wslab.stop_all() == ["blocked"]  # it used to wait for ever
        took = time.monotonic() - started
        assert 0.5 <= took < 0.5 + 2.0, f"stop_all() took {took:.1f} s"
        assert "blocked" not in wslab.running()
        with pytest.raises(ConnectionClosedError):
            await client.recv()  # shut down from outside: the TCP connection ends, no close frame
        assert client.close_code == 1006
        with pytest.raises(OSError):
            await connect(server.uri, proxy=None, open_timeout=2)
        again = await wslab.start(echo, port=port)  # the port is free again (as for a re-run), though the loop never ran
        await again.stop()
        line = server.transcript.lines[-1]
        assert line == (
            "the server's loop did not answer for 1.5 s (blocked, e.g. by time.sleep() in a handler): its port was "
            "closed and 1 connection(s) shut down from outside"
        )
    finally:
        release.set()  # the loop runs again: it finishes the stop, then the thread ends
    await asyncio.to_thread(server._thread.join, 10)
    assert not server._thread.is_alive() and server._loop.is_closed()
    assert open_fds() == fds_before  # the listening socket, its placeholder, the connection: all closed


def test_stop_blocking_is_bounded_when_the_loop_is_blocked() -> None:
    release, blocked = threading.Event(), threading.Event()
    server = wslab.start_in_thread(blocking_handler(release, blocked), name="blocked", close_timeout=0.3)
    from websockets.sync.client import connect as sync_connect

    with sync_connect(server.uri, proxy=None) as client:
        client.send("go")
        assert blocked.wait(5)
        started = time.monotonic()
        server.stop_blocking()  # it used to raise TimeoutError after close_timeout + 5 s, server still registered
        took = time.monotonic() - started
        assert took < 0.3 + 2.0, f"stop_blocking() took {took:.1f} s"
        assert "blocked" not in wslab.running()
        server.stop_blocking()  # idempotent
        release.set()
    server._thread.join(10)
    assert not server._thread.is_alive()


async def test_a_connection_in_its_opening_handshake_is_aborted_by_stop() -> None:
    """3.12's wait_closed() waited for it (the stop never finished); 3.11 left it open; 3.13 aborted it."""
    server = await wslab.start(echo, close_timeout=0.3, open_timeout=30)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # TCP only, no handshake sent
    try:
        async with asyncio.timeout(5):
            while not server._tcp:
                await asyncio.sleep(0.01)
        started = time.monotonic()
        await server.stop()
        took = time.monotonic() - started
        assert took < 0.3 + 1.0, f"stop() took {took:.1f} s"
        async with asyncio.timeout(2):
            assert await reader.read() == b""  # the client sees its connection end
        assert server.server.close_task is not None and server.server.close_task.done()
        assert server.transcript.lines == ["a connection in its opening handshake: aborted after 0.3 s"]
    finally:
        writer.close()


async def test_a_connection_in_its_tls_handshake_does_not_hold_stop() -> None:
    """Before 3.13 nothing can reach it (no connection object yet, no list in asyncio): stop() is bounded anyway."""
    import trustme

    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    server = await wslab.start(echo, ssl=context, close_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # TCP only, no TLS ClientHello
    try:
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await server.stop()
        took = time.monotonic() - started
        assert took < 0.3 + 1.0, f"stop() took {took:.1f} s"
        if sys.version_info >= (3, 13):  # abort_clients() ends it (a reset, if it was not even accepted yet)
            async with asyncio.timeout(2):
                try:
                    assert await reader.read() == b""
                except ConnectionResetError:
                    pass
    finally:
        writer.close()
