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


def test_old_import_paths_reach_the_deprecated_implementation() -> None:
    """'old imports such as `from websockets.client import connect` reach it and warn'."""
    import websockets.client

    with pytest.warns(DeprecationWarning) as caught:  # the first access also imports websockets.legacy, which warns too
        old = websockets.client.connect
    assert "websockets.client.connect is deprecated" in [str(warning.message) for warning in caught]
    assert old.__module__ == "websockets.legacy.client"
