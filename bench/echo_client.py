"""Echo client for bench_wslab.py, run as a separate process so it does not share the server's CPU.

It reads one job per line on stdin, ``<uri> <messages> <batch> <compression>``, and for each
one connects, sends ``messages`` 16-byte text messages in pipelined batches of ``batch``
(send ``batch`` messages, then read their ``batch`` echoes), and prints the elapsed seconds
of the message exchange only (the handshake and the closing handshake are not timed).
A ``tcp://host:port`` address runs the same exchange over a raw TCP connection (no framing),
against bench_tcp.py's echo server: the floor. It exits when stdin closes. Every step is bounded by timeouts, so it cannot hang.
"""

from __future__ import annotations

import asyncio
import sys
import time

from websockets.asyncio.client import connect

MESSAGE = "0123456789abcdef"  # 16 bytes
TIMEOUT = 30.0  # seconds, for one whole job


async def run_job(uri: str, messages: int, batch: int, compression: str | None) -> float:
    """Exchange ``messages`` echoes with the server at ``uri``; return the elapsed seconds."""
    async with connect(uri, compression=compression, open_timeout=5, close_timeout=5) as ws:
        started = time.perf_counter()
        for _ in range(messages // batch):
            for _ in range(batch):
                await ws.send(MESSAGE)
            for _ in range(batch):
                if await ws.recv() != MESSAGE:
                    raise RuntimeError("the server did not echo the message")
        return time.perf_counter() - started


async def run_tcp_job(uri: str, messages: int, batch: int) -> float:
    """The same exchange over raw TCP with asyncio streams; return the elapsed seconds."""
    host, port = uri.removeprefix("tcp://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    data = MESSAGE.encode()
    try:
        started = time.perf_counter()
        for _ in range(messages // batch):
            for _ in range(batch):
                writer.write(data)
                await writer.drain()
            for _ in range(batch):
                if await reader.readexactly(len(data)) != data:
                    raise RuntimeError("the server did not echo the message")
        return time.perf_counter() - started
    finally:
        writer.close()
        await writer.wait_closed()


async def main() -> None:
    for line in sys.stdin:
        uri, messages, batch, compression = line.split()
        async with asyncio.timeout(TIMEOUT):
            if uri.startswith("tcp://"):
                elapsed = await run_tcp_job(uri, int(messages), int(batch))
            else:
                elapsed = await run_job(uri, int(messages), int(batch), None if compression == "none" else compression)
        print(f"{elapsed:.9f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
