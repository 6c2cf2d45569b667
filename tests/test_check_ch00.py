"""Chapter 00's claims that its cells do not show: each one produced here for real."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest
from websockets.asyncio.server import serve

from .conftest import echo


async def test_a_second_plain_server_on_a_fixed_port_fails_and_on_port_0_leaks() -> None:
    """'with a fixed port it would fail with address already in use'; with port 0 the first one leaks."""
    async with serve(echo, "127.0.0.1", 0) as first:
        port = first.sockets[0].getsockname()[1]
        with pytest.raises(OSError) as failure:
            await serve(echo, "127.0.0.1", port)
        assert failure.value.errno == errno.EADDRINUSE
        async with serve(echo, "127.0.0.1", 0) as second:  # a re-run on port 0: both keep listening
            assert first.is_serving() and second.is_serving()


NESTED = """
import asyncio
import nest_asyncio2
import wslab
from websockets.asyncio.client import connect

async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)

async def ask(uri):
    async with connect(uri) as websocket:
        await websocket.send("still serving?")
        return await websocket.recv()

def script_style(uri):  # no await: drives the loop by hand
    return asyncio.get_event_loop().run_until_complete(ask(uri))

async def main():
    server = await wslab.start(echo)   # a background server, as in a notebook
    nest_asyncio2.apply()
    print(script_style(server.uri))
    await wslab.stop_all()

asyncio.run(main())
"""


def test_a_nested_run_until_complete_keeps_a_background_server_answering() -> None:
    """'it keeps other tasks running while it waits (a background server would keep answering)'."""
    done = subprocess.run([sys.executable, "-c", NESTED], capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (0, "still serving?\n", "")


def test_old_import_paths_reach_the_deprecated_implementation() -> None:
    """'old imports such as `from websockets.client import connect` reach it and warn'."""
    import websockets.client

    with pytest.warns(DeprecationWarning) as caught:  # the first access also imports websockets.legacy, which warns too
        old = websockets.client.connect
    assert "websockets.client.connect is deprecated" in [str(warning.message) for warning in caught]
    assert old.__module__ == "websockets.legacy.client"
