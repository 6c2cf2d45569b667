"""The floor: a raw asyncio TCP echo server, no WebSocket framing at all.

``echo_client.py`` talks to it when given a ``tcp://host:port`` address: the same 16-byte
messages in the same batches, so the ratio websockets / raw TCP shows what framing,
masking and the library's own bookkeeping cost on top of the event loop and the kernel.
"""

from __future__ import annotations

import asyncio

HOST = "127.0.0.1"


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def start_tcp_echo() -> tuple[asyncio.Server, str]:
    """Start the raw echo server on loopback; return it and its ``tcp://`` address."""
    server = await asyncio.get_running_loop().create_server(_Echo, HOST, 0)
    return server, f"tcp://{HOST}:{server.sockets[0].getsockname()[1]}"
