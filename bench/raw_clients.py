"""Cheap WebSocket clients for the benchmarks: one asyncio Protocol per connection, no library.

A fan-out or idle-memory benchmark needs hundreds of clients in the benchmark's own process.
Real ``websockets`` clients would cost as much CPU and memory as the server under test, so
these clients do the opening handshake by hand (``wslab.frames``), then only count the bytes
they receive. The server must send unfragmented, uncompressed frames (``compression=None``)
and no pings (``ping_interval=None``), so that every message is exactly ``2 + len(payload)``
bytes for payloads under 126 bytes.
"""

from __future__ import annotations

import asyncio
import os
import resource

from wslab.frames import Opcode, close_payload, encode_frame, upgrade_request

DEFLATE = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit (1,000 clients need ~2,000 fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Arrivals:
    """Counts clients that have received ``expected`` bytes; ``done`` resolves when all have."""

    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.expected = 0
        self.count = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def expect(self, total_bytes: int) -> None:
        """Start a new round: wait until every client has received ``total_bytes`` in all."""
        self.expected, self.count = total_bytes, 0
        self.done = asyncio.get_running_loop().create_future()

    def arrived(self) -> None:
        self.count += 1
        if self.count == self.clients and not self.done.done():
            self.done.set_result(None)


class RawClient(asyncio.Protocol):
    """One WebSocket client: handshake by hand, then count received bytes."""

    def __init__(self, host: str, port: int, arrivals: Arrivals | None, deflate: bool) -> None:
        request = upgrade_request(f"{host}:{port}", "/bench")
        self.request = request[:-2] + DEFLATE + b"\r\n" if deflate else request
        self.arrivals = arrivals
        self.buffer = b""
        self.received = 0  # bytes after the handshake
        self.counted = -1  # the `expected` value this client was last counted for
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self.buffer += data
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(head.split(b"\r\n")[0].decode()))
                return
            self.opened.set_result(None)
            self.buffer, data = b"", rest
        self.received += len(data)
        arrivals = self.arrivals
        if arrivals and self.received >= arrivals.expected > self.counted:
            self.counted = arrivals.expected
            arrivals.arrived()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))
        if not self.lost.done():
            self.lost.set_result(None)

    def close(self) -> None:
        """Send a masked close frame 1000; the server answers and closes the TCP connection."""
        if self.transport and not self.transport.is_closing():
            self.transport.write(encode_frame(Opcode.CLOSE, close_payload(1000), mask=os.urandom(4)))


async def open_clients(
    host: str, port: int, n: int, arrivals: Arrivals | None = None, deflate: bool = False, timeout: float = 60.0
) -> list[RawClient]:
    """Open ``n`` clients, at most 50 handshakes at a time (the listen backlog is 100)."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(50)
    clients: list[RawClient] = []

    async def one() -> None:
        async with gate:
            client = RawClient(host, port, arrivals, deflate)
            clients.append(client)
            await loop.create_connection(lambda: client, host, port)
            await client.opened

    async with asyncio.timeout(timeout):
        await asyncio.gather(*(one() for _ in range(n)))
    return clients


async def close_clients(clients: list[RawClient], timeout: float = 10.0) -> None:
    """Close every client cleanly; abort whatever has not closed within ``timeout`` seconds."""
    for client in clients:
        client.close()
    done, pending = await asyncio.wait([c.lost for c in clients], timeout=timeout)
    for client in clients:
        if client.transport and not client.lost.done():
            client.transport.abort()
