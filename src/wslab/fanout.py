"""Per-client outboxes: a bounded queue and a writer task, so one slow client never holds up the others."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

__all__ = ["Outbox"]


class Outbox:
    """Messages waiting to be sent to one client, and the task that sends them in order.

    ``put()`` never waits: it is safe to call in a loop over many clients. When the queue
    is full, ``when_full`` decides:

    - ``"drop-oldest"`` (the default): the oldest waiting message is dropped (and counted
      in ``dropped``); suits live data, where only the latest value matters.
    - ``"disconnect"``: the message is refused (counted in ``dropped``, as is every later
      one) and the client is closed with 1008; if the close does not complete within
      ``close_timeout`` seconds (a client that stopped reading cannot read the close frame
      either), its TCP connection is aborted. The handler's ``async for`` then ends with
      ``ConnectionClosed``, which ``async with`` swallows, so the handler ends cleanly.
      Suits a chat: the client reconnects and catches up.

    Either way a client that stops reading costs at most ``maxsize`` messages here, plus
    what the connection's write buffer holds (``write_limit`` and the message being sent).
    Messages put while the writer has had no turn to run (a burst handled without an
    ``await`` in between) count against ``maxsize`` too.

    >>> async def handler(websocket):                       # doctest: +SKIP
    ...     async with Outbox(websocket, maxsize=16) as outbox:
    ...         outbox.put("welcome")
    ...         async for message in websocket:
    ...             outbox.put(message)
    """

    def __init__(
        self,
        connection: Connection,
        maxsize: int = 16,
        *,
        when_full: Literal["drop-oldest", "disconnect"] = "drop-oldest",
        close_timeout: float = 1.0,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        if when_full not in ("drop-oldest", "disconnect"):
            raise ValueError(f"when_full must be 'drop-oldest' or 'disconnect', got {when_full!r}")
        self.connection = connection
        self.maxsize = maxsize
        self.when_full = when_full
        self.close_timeout = close_timeout
        self.dropped = 0
        self.sent = 0
        self.disconnected = False
        self._queue: asyncio.Queue[str | bytes] = asyncio.Queue(maxsize)
        self._writer: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    def put(self, message: str | bytes) -> bool:
        """Queue ``message`` without waiting; return False if a message was dropped or refused."""
        if not isinstance(message, (str, bytes)):
            raise TypeError(f"an Outbox sends str or bytes, got {type(message).__name__}: encode it first (json.dumps)")
        if self.disconnected:
            self.dropped += 1
            return False
        if not self._queue.full():
            self._queue.put_nowait(message)
            return True
        self.dropped += 1
        if self.when_full == "disconnect":
            self.disconnected = True
            self._closing = asyncio.create_task(self._disconnect())
        else:
            self._queue.get_nowait()
            self._queue.put_nowait(message)
        return False

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

    async def _disconnect(self) -> None:
        """Close with 1008; abort the TCP connection if the close does not complete in time."""
        reason = f"too slow: {self.maxsize} messages waiting"
        try:
            async with asyncio.timeout(self.close_timeout):
                await self.connection.close(CloseCode.POLICY_VIOLATION, reason)
        except TimeoutError:  # its buffers are full, so it cannot read the close frame either
            self.connection.transport.abort()

    async def __aenter__(self) -> Outbox:
        self._writer = asyncio.create_task(self._write())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        if self._closing is not None:
            await self._closing  # bounded by close_timeout
        return self.disconnected and isinstance(exc, ConnectionClosed)  # we closed it: not a handler failure

    def __repr__(self) -> str:
        state = ", disconnected" if self.disconnected else ""
        return f"<Outbox {len(self)}/{self.maxsize} waiting, {self.sent} sent, {self.dropped} dropped{state}>"
