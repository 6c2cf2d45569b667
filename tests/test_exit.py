"""Servers still running when the interpreter exits are closed quietly."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPTS = {
    "on a loop that is still open": """
        import asyncio, atexit, socket, wslab

        async def echo(websocket):
            async for message in websocket:
                await websocket.send(message)

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(wslab.start(echo))

        def handshake():  # a client that is still connected at exit
            raw = socket.create_connection((server.host, server.port))
            raw.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n")
            return raw, raw.recv(4096)

        raw, answer = loop.run_until_complete(loop.run_in_executor(None, handshake))
        atexit.register(raw.close)  # runs before wslab's exit handler, which was registered first
        assert answer.startswith(b"HTTP/1.1 101")
        print("exiting with", list(wslab.running()))
    """,
    "after asyncio.run ended": """
        import asyncio, wslab

        async def echo(websocket):
            await websocket.recv()

        async def main():
            await wslab.start(echo)
        asyncio.run(main())
        print("exiting with", list(wslab.running()))
    """,
    "in a thread": """
        import atexit, socket, wslab

        async def echo(websocket):
            async for message in websocket:
                await websocket.send(message)

        server = wslab.start_in_thread(echo)
        raw = socket.create_connection((server.host, server.port))   # a client still connected
        raw.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n")
        assert raw.recv(4096).startswith(b"HTTP/1.1 101")
        atexit.register(raw.close)
        print("exiting with", list(wslab.running()))
    """,
    "with a client that never answers the close frame": """
        import socket, time, wslab

        async def echo(websocket):
            async for message in websocket:
                await websocket.send(message)

        server = wslab.start_in_thread(echo)
        raw = socket.create_connection((server.host, server.port))
        raw.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n")
        assert raw.recv(4096).startswith(b"HTTP/1.1 101")
        raw.detach()  # the socket stays open, silent, until the process ends
        print("exiting with", list(wslab.running()))
    """,
}


@pytest.mark.parametrize("script", SCRIPTS.values(), ids=SCRIPTS.keys())
def test_exit_is_quiet_and_prompt(script: str) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("exiting with ['echo']")
    assert done.stderr == ""  # no "Task was destroyed but it is pending", no ResourceWarning
