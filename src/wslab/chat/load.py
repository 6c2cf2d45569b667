"""A crowd of chat clients in one room, for the load test and the latency benchmark."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection

from .client import loopback_connect

__all__ = ["CrowdResult", "run_crowd"]


@dataclass
class CrowdResult:
    """What every client of the crowd received, and how long each message took to arrive."""

    senders: int
    per_sender: int
    received: list[list[dict]] = field(default_factory=list)  # per client: "message" events, in arrival order
    latencies: list[float] = field(default_factory=list)  # seconds from send to arrival, every delivery

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile of the delivery latency, in seconds."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def run_crowd(
    uri: str, clients: int = 500, senders: int = 5, per_sender: int = 10, room: str = "crowd", timeout: float = 90
) -> CrowdResult:
    """Join ``clients`` clients to ``room``; ``senders`` of them say ``per_sender`` messages each.

    Returns once every client has received every message (or raises TimeoutError after ``timeout`` s).
    Every client reads all the time, so none falls behind. Messages are ``"<sender> <n> <send time>"``.
    """
    expected = senders * per_sender
    result = CrowdResult(senders, per_sender, [[] for _ in range(clients)])
    joined = [asyncio.Event() for _ in range(clients)]
    ready = Countdown(clients)  # clients that know the whole crowd is in the room
    done = Countdown(clients)  # clients that have every message

    async def listen(index: int, ws: ClientConnection) -> None:
        async for data in ws:
            message = json.loads(data)
            kind = message["type"]
            if (kind == "joined" and len(message["members"]) == clients) or (kind == "presence" and message["count"] == clients):
                ready.count_down()
            if kind == "joined":
                joined[index].set()
            elif kind == "message":
                arrived = time.perf_counter()
                result.received[index].append(message)
                result.latencies.append(arrived - float(message["text"].rsplit(" ", 1)[1]))
                if len(result.received[index]) == expected:
                    done.count_down()

    async with asyncio.timeout(timeout):
        connections = [await loopback_connect(uri, compression=None) for _ in range(clients)]
        try:
            async with asyncio.TaskGroup() as group:
                listeners = [group.create_task(listen(i, ws)) for i, ws in enumerate(connections)]
                for index, ws in enumerate(connections):
                    await ws.send(json.dumps({"v": 1, "type": "join", "room": room, "nick": f"c{index}"}))
                    await joined[index].wait()
                await ready.wait()  # measure the messages, not the join traffic before them
                for n in range(per_sender):
                    for sender in range(senders):
                        text = f"c{sender} {n} {time.perf_counter()!r}"
                        await connections[sender].send(json.dumps({"v": 1, "type": "say", "text": text}))
                    await asyncio.sleep(0.1)  # stay within the server's rate limit (10 messages/s, burst 20)
                await done.wait()
                for task in listeners:
                    task.cancel()
        finally:
            await asyncio.gather(*(ws.close() for ws in connections))
    return result


class Countdown:
    """An event that is set after ``count_down()`` was called ``n`` times."""

    def __init__(self, n: int) -> None:
        self.left = n
        self._event = asyncio.Event()

    def count_down(self) -> None:
        self.left -= 1
        if self.left == 0:
            self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
