"""Memory per idle connection: the growth of this process's resident memory (RSS) for N clients.

Run once per kind of server, each in a FRESH process (run_all.py does that), because memory
freed by one measurement would be reused by the next and make it look cheaper:

    python bench/bench_memory.py wslab 1000          # prints KiB per connection
    python bench/bench_memory.py wslab-deflate 1000  # clients that negotiate permessage-deflate
    python bench/bench_memory.py bare 1000           # a bare websockets serve()
    python bench/bench_memory.py tcp 1000            # a raw asyncio TCP server: the floor

Both ends live in this process; the client end is the same small raw_clients.RawClient for
every kind, so differences between kinds are the servers'. Linux only (/proc/self/statm).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys

from websockets.asyncio.server import ServerConnection, serve

import wslab
from raw_clients import close_clients, open_clients, raise_fd_limit

HOST = "127.0.0.1"
KINDS = ("tcp", "bare", "wslab", "wslab-deflate")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def hold(websocket: ServerConnection) -> None:
    await websocket.wait_closed()


class _FakeUpgrade(asyncio.Protocol):
    """Answers any request with a canned 101, then holds the socket: no WebSocket state at all."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")


async def per_connection(kind: str, n: int) -> float:
    """KiB of RSS per idle connection for ``n`` clients of a server of ``kind``."""
    raise_fd_limit()
    compression = "deflate" if kind == "wslab-deflate" else None
    options = {"compression": compression, "ping_interval": None}
    # Start everything once with a few clients, so that imports and first-use caches are not counted.
    for warm_up in (True, False):
        gc.collect()
        before = rss_bytes()
        if kind == "tcp":
            server = await asyncio.get_running_loop().create_server(_FakeUpgrade, HOST, 0)
            port = server.sockets[0].getsockname()[1]
        elif kind == "bare":
            server = await serve(hold, HOST, 0, **options)
            port = server.sockets[0].getsockname()[1]
        else:
            background = await wslab.start(hold, name="bench-memory", **options)
            port = background.port
        clients = await open_clients(HOST, port, 10 if warm_up else n, deflate=compression is not None)
        await asyncio.sleep(0.2)  # let the last handlers start; memory, not timing, is measured here
        gc.collect()
        grown = rss_bytes() - before
        await close_clients(clients, timeout=5)
        if kind == "tcp":
            server.close()
        elif kind == "bare":
            server.close()
            await server.wait_closed()
        else:
            await background.stop(close_timeout=1)
    return grown / n / 1024


if __name__ == "__main__":
    kind, n = sys.argv[1], int(sys.argv[2])
    if kind not in KINDS:
        sys.exit(f"kind must be one of {', '.join(KINDS)}")
    print(f"{asyncio.run(per_connection(kind, n)):.2f}")
