"""A small Python chat client for notebooks and tests: send protocol messages, read replies as dicts.

Also :func:`loopback_connect`, the ``connect()`` every wslab client uses for wslab's own servers: a server on
this machine is reached directly, even where the environment names a proxy (``http_proxy`` on many hubs).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect

from .protocol import encode

__all__ = ["ChatClient", "is_loopback", "loopback_connect"]


def is_loopback(uri: str) -> bool:
    """Whether ``uri`` names this machine: ``localhost``, ``127.0.0.0/8`` or ``::1``."""
    host = urlsplit(uri).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost
        return False


def loopback_connect(uri: str, **kwargs: Any) -> connect:
    """``connect(uri, **kwargs)``, with ``proxy=None`` when ``uri`` is on this machine and no proxy is given.

    ``connect()`` follows ``http_proxy``/``https_proxy`` even for ``ws://127.0.0.1:...``; a proxy elsewhere
    cannot reach this machine's loopback address, so a loopback client must not use it. Other hosts keep the
    environment's proxy. Use the result as ``connect()`` itself: ``await``, ``async with`` or ``async for``.
    """
    if is_loopback(uri):
        kwargs.setdefault("proxy", None)
    return connect(uri, **kwargs)


class ChatClient:
    """One chat connection. ``async with ChatClient(uri) as ada:`` connects and reads the server's hello.

    Or ``ada = await ChatClient.connect(uri)`` ... ``await ada.close()`` across notebook cells.
    ``connect_kwargs`` go to :func:`loopback_connect` (no proxy for a chat on this machine); the opening
    handshake, the hello and every ``recv()`` are bounded by ``timeout`` seconds. If the hello does not come,
    the connection is closed (aborted if the server does not answer the close) before the error is raised.

    >>> async with ChatClient(chat.ws_uri) as ada:          # doctest: +SKIP
    ...     await ada.join("lobby", "ada")
    ...     await ada.say("hi")
    ...     print(await ada.recv())
    """

    def __init__(self, uri: str, timeout: float = 2.0, **connect_kwargs: Any) -> None:
        self.uri = uri
        self.timeout = timeout
        self.connect_kwargs = {"open_timeout": timeout, **connect_kwargs}  # every wait is bounded by ``timeout``
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
        self.ws = await loopback_connect(self.uri, **self.connect_kwargs)
        try:
            self.hello = await self.recv()
        except TimeoutError:
            await self._discard()
            raise TimeoutError(f"no hello from {self.uri} within {self.timeout:g} s: is it the chat server?") from None
        except asyncio.CancelledError:
            self.ws.transport.abort()  # no time to close politely
            raise
        except Exception:  # not JSON, or the connection closed: no connection is left behind
            await self._discard()
            raise
        return self

    async def _discard(self) -> None:
        """Close a connection that will not be used, within ``timeout`` seconds; abort it if the peer lingers."""
        try:
            async with asyncio.timeout(self.timeout):
                await self.ws.close()
        except TimeoutError:
            pass  # a server that never answers the close: the abort below ends the TCP connection
        finally:
            self.ws.transport.abort()  # nothing left to do after a finished close

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
