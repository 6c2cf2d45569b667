"""The chat server: rooms, nicknames, presence, history, and the guards around them.

>>> chat = ChatServer(history=20)                 # doctest: +SKIP
>>> server = await chat.start()                   # doctest: +SKIP
>>> chat.ws_uri, chat.http_url                    # doctest: +SKIP
('ws://127.0.0.1:PORT/ws', 'http://127.0.0.1:PORT/')
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from ..fanout import Outbox
from ..guards import RateLimit, rate_limited, token_auth
from ..servers import BackgroundServer
from ..servers import start as wslab_start
from .protocol import CLIENT_TYPES, LIMITS, ChatError, encode, parse_client

__all__ = ["ChatServer", "Client", "WS_PATH"]

WS_PATH = "/ws"  # where the WebSocket lives; the page is at "/", a health check at "/health"


@dataclass(eq=False)
class Client:
    """One connection: its outbox, and its nickname and room once it has joined."""

    connection: ServerConnection
    outbox: Outbox
    nick: str | None = None
    room: str | None = None


@dataclass
class _Room:
    members: dict[str, Client] = field(default_factory=dict)
    history: deque[dict[str, Any]] = field(default_factory=deque)
    seq: int = 0


class ChatServer:
    """A chat service for ``wslab.start``: ``handler`` for WebSockets, ``process_request`` for HTTP.

    - ``history``: how many messages of a room a joining client receives.
    - ``queue_size``: messages waiting per client; a client that falls that far behind is
      disconnected with 1008 (so no live client ever misses a message).
    - ``rate`` and ``burst``: messages per second per connection (token bucket); over it: 1008.
    - ``origins``: extra browser origins allowed besides the page's own (e.g. a hub's
      ``https://hub.example.org``); clients that send no Origin (scripts) are allowed.
    - ``token``: if set, WebSocket clients must send it (``?token=`` or ``Authorization: Bearer``).

    To add a message type, subclass: extend ``client_types`` and override ``receive()``,
    answering with ``reply()`` and ``broadcast()``.
    """

    client_types: dict[str, dict[str, type]] = CLIENT_TYPES

    def __init__(
        self,
        *,
        history: int = 20,
        queue_size: int = 100,
        rate: float = 10.0,
        burst: int = 20,
        origins: Collection[str] = (),
        token: str | None = None,
        max_size: int = 2**16,
        kick_timeout: float = 1.0,
    ) -> None:
        self.history = history
        self.queue_size = queue_size
        self.rate, self.burst = rate, burst
        self.origins = set(origins)
        self.token = token
        self.max_size = max_size
        self.kick_timeout = kick_timeout
        self.rooms: dict[str, _Room] = {}
        self.clients: set[Client] = set()
        self.kicked = 0  # clients disconnected for being too slow
        self.server: BackgroundServer | None = None
        self._check_token = token_auth({token}) if token is not None else None
        self._kicks: set[asyncio.Task[None]] = set()

    # -- starting ---------------------------------------------------------------------------

    async def start(self, *, name: str = "chat", host: str = "127.0.0.1", port: int = 0, **serve_kwargs: Any) -> BackgroundServer:
        """Start this chat as a wslab background server named ``name``; extra kwargs go to ``serve()``."""
        serve_kwargs.setdefault("max_size", self.max_size)
        self.server = await wslab_start(self.handler, name=name, host=host, port=port, process_request=self.process_request, **serve_kwargs)
        return self.server

    @property
    def http_url(self) -> str:
        """The browser page's address, such as ``http://127.0.0.1:PORT/``."""
        return self._started().uri.replace("ws", "http", 1) + "/"

    @property
    def ws_uri(self) -> str:
        """The WebSocket address for clients, such as ``ws://127.0.0.1:PORT/ws``."""
        return self._started().uri + WS_PATH

    def _started(self) -> BackgroundServer:
        if self.server is None:
            raise RuntimeError("the chat is not started yet: run `server = await chat.start()` first")
        return self.server

    # -- HTTP -------------------------------------------------------------------------------

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Serve the page and /health over HTTP; check path, Origin and token of WebSocket requests."""
        path = urlsplit(request.path).path
        if request.headers.get("Upgrade", "").lower() != "websocket":
            if path == "/":
                return _respond(connection, HTTPStatus.OK, page(), "text/html; charset=utf-8")
            if path == "/health":
                body = json.dumps({"status": "ok", "rooms": len(self.rooms), "clients": len(self.clients)})
                return _respond(connection, HTTPStatus.OK, body + "\n", "application/json")
            if path == WS_PATH:
                return None  # a broken WebSocket request: websockets answers 426 Upgrade Required
            return connection.respond(HTTPStatus.NOT_FOUND, f"Not found: the chat page is at /, the WebSocket at {WS_PATH}.\n")
        if path != WS_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, f"No WebSocket here: connect to {WS_PATH}.\n")
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin, request.headers.get("Host", "")):
            return connection.respond(HTTPStatus.FORBIDDEN, f"Origin {origin} is not allowed.\n")
        if self._check_token is not None:
            return self._check_token(connection, request)
        return None

    def _origin_allowed(self, origin: str, host: str) -> bool:
        if origin in self.origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == host  # the page this server served

    # -- WebSocket --------------------------------------------------------------------------

    async def handler(self, connection: ServerConnection) -> None:
        """One client: greet it, then handle its messages until it leaves, is too fast or too slow."""
        async with Outbox(connection, maxsize=self.queue_size) as outbox:
            client = Client(connection, outbox)
            self.clients.add(client)
            try:
                outbox.put(encode({"type": "hello", "limits": LIMITS, "history": self.history}))
                async for data in rate_limited(connection, RateLimit(self.rate, self.burst)):
                    if client not in self.clients:  # disconnected for being too slow: ignore the rest
                        continue
                    try:
                        self.receive(client, parse_client(data, self.client_types))
                    except ChatError as exc:
                        print(f"error {exc.code}: {exc}")
                        self._deliver(client, exc.reply())
            except ConnectionClosed:  # vanished, or closed with an error code: leave all the same
                pass
            finally:
                self.clients.discard(client)
                self._leave(client)

    def receive(self, client: Client, message: dict[str, Any]) -> None:
        """Act on one valid ``message`` from ``client``; raise :class:`ChatError` to answer with an error."""
        kind = message["type"]
        if kind == "join":
            self._join(client, message["room"], message["nick"])
        elif client.room is None:
            raise ChatError("not-joined", f"join a room before you {kind}: send {{\"v\": 1, \"type\": \"join\", \"room\": ..., \"nick\": ...}}")
        elif kind == "say":
            self._say(client, message["text"])
        else:  # leave
            room = client.room
            self._leave(client)
            self.reply(client, {"type": "left", "room": room})

    def _join(self, client: Client, name: str, nick: str) -> None:
        target = self.rooms.get(name)
        if target is not None and nick in target.members and target.members[nick] is not client:
            raise ChatError("nick-taken", f"nickname {nick!r} is taken in room {name!r}: pick another")
        self._leave(client)
        room = self.rooms.setdefault(name, _Room(history=deque(maxlen=self.history)))
        client.room, client.nick = name, nick
        members = sorted([*room.members, nick])
        self.broadcast(name, {"type": "presence", "room": name, "event": "join", "nick": nick, "members": members})
        room.members[nick] = client
        self.reply(client, {"type": "joined", "room": name, "nick": nick, "members": members, "history": list(room.history)})
        print(f"{nick} joined {name}")

    def _say(self, client: Client, text: str) -> None:
        assert client.room is not None
        room = self.rooms[client.room]
        room.seq += 1
        entry = {"seq": room.seq, "nick": client.nick, "text": text}
        room.history.append(entry)
        self.broadcast(client.room, {"type": "message", "room": client.room, **entry})

    def _leave(self, client: Client) -> None:
        name, nick = client.room, client.nick
        if name is None or nick is None:
            return
        client.room = client.nick = None
        room = self.rooms[name]
        del room.members[nick]
        print(f"{nick} left {name}")
        if room.members:
            self.broadcast(name, {"type": "presence", "room": name, "event": "leave", "nick": nick, "members": sorted(room.members)})
        else:
            del self.rooms[name]  # an empty room is forgotten, history included

    def broadcast(self, room: str, message: dict[str, Any], exclude: Client | None = None) -> None:
        """Queue ``message`` for every member of ``room`` (but ``exclude``); never waits on a slow client."""
        data = encode(message)
        for client in list(self.rooms[room].members.values()):
            if client is not exclude:
                self._deliver(client, data)

    def reply(self, client: Client, message: dict[str, Any]) -> None:
        """Queue ``message`` for ``client`` only."""
        self._deliver(client, encode(message))

    def _deliver(self, client: Client, data: str) -> None:
        if client.connection.state.name != "OPEN":
            return
        if len(client.outbox) >= client.outbox.maxsize:
            self._kick(client)
            return
        client.outbox.put(data)

    def _kick(self, client: Client) -> None:
        """Disconnect a client that fell ``queue_size`` messages behind: 1008, or abort if it cannot take even that."""
        if client in self.clients:
            self.clients.discard(client)
            self.kicked += 1
            print(f"{client.nick or 'a client'} is too slow: disconnected")
            self._leave(client)
            task = asyncio.create_task(self._close_slow(client.connection))
            self._kicks.add(task)
            task.add_done_callback(self._kicks.discard)

    async def _close_slow(self, connection: ServerConnection) -> None:
        try:
            async with asyncio.timeout(self.kick_timeout):
                await connection.close(CloseCode.POLICY_VIOLATION, f"too slow: more than {self.queue_size} messages behind")
        except TimeoutError:  # its buffers are full, so it cannot read the close frame either
            connection.transport.abort()


def page() -> str:
    """The browser client: one HTML file with inline JavaScript, shipped with the package."""
    return resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")


def _respond(connection: ServerConnection, status: HTTPStatus, body: str, content_type: str) -> Response:
    response = connection.respond(status, body)
    del response.headers["Content-Type"]  # respond() set text/plain; setting it again would add a second header
    response.headers["Content-Type"] = content_type
    response.headers["Cache-Control"] = "no-store"
    return response
