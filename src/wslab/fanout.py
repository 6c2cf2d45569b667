"""Per-client outboxes: a bounded queue and a writer task, so one slow client never holds up the others."""

from __future__ import annotations

import asyncio
import contextlib

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

__all__ = ["Outbox"]


class Outbox:
    """Messages waiting to be sent to one client, and the task that sends them in order.

    ``put()`` never waits: it is safe to call in a loop over many clients. When the
    queue is full, the oldest waiting message is dropped (and counted in ``dropped``),
    so a client that stops reading costs at most ``maxsize`` messages of memory.
    Size it for your bursts: messages put while the writer has had no turn to run
    (a burst handled without an ``await`` in between) count against ``maxsize`` too.

    >>> async def handler(websocket):                       # doctest: +SKIP
    ...     async with Outbox(websocket, maxsize=16) as outbox:
    ...         outbox.put("welcome")
    ...         async for message in websocket:
    ...             outbox.put(message)
    """

    def __init__(self, connection: Connection, maxsize: int = 16) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.connection = connection
        self.maxsize = maxsize
        self.dropped = 0
        self.sent = 0
        self._queue: asyncio.Queue[str | bytes] = asyncio.Queue(maxsize)
        self._writer: asyncio.Task[None] | None = None

    def put(self, message: str | bytes) -> bool:
        """Queue ``message`` without waiting; return False if the oldest message had to be dropped."""
        if not isinstance(message, (str, bytes)):
            raise TypeError(f"an Outbox sends str or bytes, got {type(message).__name__}: encode it first (json.dumps)")
        kept_all = True
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            kept_all = False
        self._queue.put_nowait(message)
        return kept_all

    def __len__(self) -> int:
        """How many messages are waiting."""
        return self._queue.qsize()

    async def _write(self) -> None:
        try:
            while True:
                message = await self._queue.get()
                await self.connection.send(message)
                self.sent += 1
        except ConnectionClosed:  # the client left: nothing more to deliver
            pass

    async def __aenter__(self) -> Outbox:
        self._writer = asyncio.create_task(self._write())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer

    def __repr__(self) -> str:
        return f"<Outbox {len(self)}/{self.maxsize} waiting, {self.sent} sent, {self.dropped} dropped>"
