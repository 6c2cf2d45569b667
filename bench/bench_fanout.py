"""Fan-out: one message to N clients, a sequential ``await send()`` loop vs ``broadcast()``.

Each round sends one 16-byte text message to every client of a wslab server and measures
the time from the first send until the LAST client has received the whole frame. The clients
are raw_clients.RawClient objects in this process (they only count bytes, so they add little
and the same for both methods). The two methods alternate round by round after a warm-up.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from websockets.asyncio.server import ServerConnection, broadcast

import wslab
from raw_clients import Arrivals, close_clients, open_clients, raise_fd_limit

MESSAGE = "0123456789abcdef"
FRAME = 2 + len(MESSAGE)  # unmasked server frame, payload < 126 bytes
ROUND_TIMEOUT = 10.0


async def hold(websocket: ServerConnection) -> None:
    """The server's handler: keep the connection open until the client leaves."""
    await websocket.wait_closed()


async def sequential(connections: set[ServerConnection]) -> None:
    for connection in list(connections):
        await connection.send(MESSAGE)


async def with_broadcast(connections: set[ServerConnection]) -> None:
    broadcast(connections, MESSAGE)


def percentile(values: list[float], p: int) -> float:
    """The p-th percentile (inclusive method: p=100 is the maximum)."""
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else values[0]


async def measure_fanout(clients: int, rounds: int) -> dict[str, list[float]]:
    """Milliseconds until the last of ``clients`` clients has the message, ``rounds`` times per method."""
    raise_fd_limit()
    server = await wslab.start(hold, name="bench-fanout", compression=None, ping_interval=None)
    arrivals = Arrivals(clients)
    raw = await open_clients(server.host, server.port, clients, arrivals)
    try:
        async with asyncio.timeout(10):
            while len(server.connections) < clients:  # the last handshakes may still be finishing
                await asyncio.sleep(0.01)
        methods = {"loop": sequential, "broadcast": with_broadcast}
        timings: dict[str, list[float]] = {name: [] for name in methods}
        sent = 0
        for i in range(rounds + 1):  # round 0 is a warm-up
            order = list(methods.items())
            for name, send in order if i % 2 == 0 else reversed(order):
                sent += FRAME
                arrivals.expect(sent)
                started = time.perf_counter()
                await send(server.connections)
                await asyncio.wait_for(asyncio.shield(arrivals.done), ROUND_TIMEOUT)
                if i:
                    timings[name].append((time.perf_counter() - started) * 1000)
        return timings
    finally:
        await close_clients(raw)
        await server.stop(close_timeout=1)


if __name__ == "__main__":
    result = asyncio.run(measure_fanout(1000, 20))
    for name, ms in result.items():
        print(f"{name:9}  p50 {percentile(ms, 50):7.2f} ms  p99 {percentile(ms, 99):7.2f} ms")
