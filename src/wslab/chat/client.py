"""A small Python chat client for notebooks and tests: send protocol messages, read replies as dicts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from .protocol import encode

__all__ = ["ChatClient"]


class ChatClient:
    """One chat connection. ``async with ChatClient(uri) as ada:`` connects and reads the server's hello.

    Or ``ada = await ChatClient.connect(uri)`` ... ``await ada.close()`` across notebook cells.

    >>> async with ChatClient(chat.ws_uri) as ada:          # doctest: +SKIP
    ...     await ada.join("lobby", "ada")
    ...     await ada.say("hi")
    ...     print(await ada.recv())
    """

    def __init__(self, uri: str, timeout: float = 2.0, **connect_kwargs: Any) -> None:
        self.uri = uri
        self.timeout = timeout
        self.connect_kwargs = connect_kwargs
        self.hello: dict[str, Any] = {}
        self.ws: ClientConnection

    @classmethod
    async def connect(cls, uri: str, timeout: float = 2.0, **connect_kwargs: Any) -> ChatClient:
        """Connect and read the server's hello, without ``async with``; ``await client.close()`` when done."""
        return await cls(uri, timeout, **connect_kwargs).__aenter__()

    async def close(self) -> None:
        """Close the connection normally (1000)."""
        await self.ws.close()

    async def __aenter__(self) -> ChatClient:
        self.ws = await connect(self.uri, **self.connect_kwargs)
        self.hello = await self.recv()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def send(self, **fields: Any) -> None:
        """Send one protocol message; the version field is added for you."""
        await self.ws.send(encode(fields))

    async def join(self, room: str, nick: str) -> dict[str, Any]:
        """Join ``room`` as ``nick``; return the server's answer (``joined`` or ``error``)."""
        await self.send(type="join", room=room, nick=nick)
        return await self.recv()

    async def say(self, text: str) -> None:
        """Say ``text`` in the current room (the server sends it back to everyone, you included)."""
        await self.send(type="say", text=text)

    async def recv(self) -> dict[str, Any]:
        """The next message from the server as a dict; TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(self.timeout):
            data = await self.ws.recv()
        return json.loads(data)
