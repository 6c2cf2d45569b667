"""The chat server: rooms, nicknames, presence, history, and the guards around them.

>>> chat = ChatServer(history=20)                 # doctest: +SKIP
>>> server = await chat.start()                   # doctest: +SKIP
>>> chat.ws_uri, chat.http_url                    # doctest: +SKIP
('ws://127.0.0.1:PORT/ws', 'http://127.0.0.1:PORT/')
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import functools
import hashlib
import hmac
import json
import re
import time
from collections import Counter, deque
from collections.abc import Collection, Coroutine, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from ..guards import RateLimit, RepeatedHeader, header
from ..servers import BackgroundServer
from ..servers import start as wslab_start
from .protocol import CLIENT_TYPES, LIMITS, ChatError, encode_bytes, nick_key, parse_client

__all__ = ["ChatServer", "Client", "TOKEN_PARAM", "WS_PATH"]

WS_PATH = "/ws"  # where the WebSocket lives; the page is at "/", a health check at "/health"
TOKEN_PARAM = "chat_token"  # the query parameter of the query-string form (Jupyter's own is "token")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")  # Host names a chat always answers to
AUTH_TYPES: dict[str, dict[str, type]] = {"auth": {"token": str}}
PING_RATE, PING_BURST = 1.0, 5  # pings per second, bursts: their own limit, so that a page's pings never cost it a message


@dataclass(eq=False, slots=True)
class Client:
    """One connection, and its nickname and room once it has joined."""

    connection: ServerConnection
    ip: str = ""
    nick: str | None = None
    room: str | None = None
    behind_since: float | None = None  # when it was first seen with unsent bytes (None: it keeps up)
    closing: bool = False  # the server is closing it: ignore what it still sends


@dataclass(slots=True)
class _Room:
    history: deque[dict[str, Any]]
    members: dict[str, Client] = field(default_factory=dict)  # by nickname
    keys: dict[str, Client] = field(default_factory=dict)  # by nick_key(nickname): who reads as whom
    names: list[str] = field(default_factory=list)  # the nicknames, sorted
    seq: int = 0
    changes: list[dict[str, str]] = field(default_factory=list)  # presence news not sent yet
    late: dict[Client, int] = field(default_factory=dict)  # joined meanwhile: how many changes it knows
    flush: asyncio.TimerHandle | None = None


class ChatServer:
    """A chat service for ``wslab.start``: ``handler`` for WebSockets, ``process_request`` for HTTP.

    - ``history``: how many messages of a room a joining client receives.
    - ``slow_after`` and ``max_buffer``: a client is too slow, and is closed with 1008, when unsent
      data has waited for it ``slow_after`` seconds without its buffer ever draining, or when more than
      ``max_buffer`` bytes wait for it (the bound on memory per client). A burst is not slowness.
    - ``rate`` and ``burst``: messages per second per connection (token bucket); over it: 1008.
    - ``presence_delay``: presence news is gathered this long and sent as one message.
    - ``heartbeat``: the ``hello`` asks clients to send a ``ping`` every so many seconds (at least 1), and to
      give up on a connection that brought no message for three times as long, with a ping of its own
      unanswered for twice as long (the browser page does).
    - ``max_clients`` / ``max_per_ip``: connection caps (503 at the handshake, or 1013 after it);
      ``proxies`` are addresses not capped per IP (every client behind a proxy shares its address).
    - ``origins`` and ``hosts``: extra browser origins and Host names allowed besides the local ones.
    - ``token``: if set, clients must send it: first message ``{"type": "auth", "token": ...}``
      (``auth="message"``, the default), or at the handshake (``auth="query"``: ``?chat_token=`` or
      ``Authorization: Bearer``).

    To add a message type, subclass: extend ``client_types`` and override ``receive()``,
    answering with ``reply()`` and ``broadcast()``.
    """

    client_types: dict[str, dict[str, type]] = CLIENT_TYPES

    def __init__(
        self,
        *,
        history: int = 20,
        slow_after: float = 5.0,
        max_buffer: int = 2**18,
        rate: float = 10.0,
        burst: int = 20,
        presence_delay: float = 0.1,
        heartbeat: float = 5,
        max_clients: int = 20_000,
        max_per_ip: int = 50,
        proxies: Collection[str] = ("127.0.0.1", "::1"),
        origins: Collection[str] = (),
        hosts: Collection[str] = (),
        token: str | None = None,
        auth: str = "message",
        auth_timeout: float = 10.0,
        max_size: int = 2**16,
        kick_timeout: float = 1.0,
    ) -> None:
        if auth not in ("message", "query"):
            raise ValueError(f"auth must be 'message' or 'query', got {auth!r}")
        if not heartbeat >= 1 / PING_RATE:
            raise ValueError(f"heartbeat must be at least {1 / PING_RATE:g} s (pings over {PING_RATE:g} per second are a flood), got {heartbeat}")
        self.history = history
        self.slow_after, self.max_buffer = slow_after, max_buffer
        self.rate, self.burst = rate, burst
        self.presence_delay = presence_delay
        self.heartbeat = heartbeat
        self.max_clients, self.max_per_ip, self.proxies = max_clients, max_per_ip, set(proxies)
        self.origins = set(origins)
        self.hosts = {*LOCAL_HOSTS, *hosts, *(urlsplit(o).hostname or "" for o in origins)}
        self.token, self.auth, self.auth_timeout = token, auth, auth_timeout
        self.max_size = max_size
        self.kick_timeout = kick_timeout
        self.rooms: dict[str, _Room] = {}
        self.clients: set[Client] = set()
        self.per_ip: Counter[str] = Counter()
        self.kicked = 0  # clients disconnected for being too slow
        self.server: BackgroundServer | None = None
        self._behind: set[Client] = set()  # clients with unsent bytes, watched by _watch()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- starting ---------------------------------------------------------------------------

    async def start(self, *, name: str = "chat", host: str = "127.0.0.1", port: int = 0, **serve_kwargs: Any) -> BackgroundServer:
        """Start this chat as a wslab background server named ``name``; extra kwargs go to ``serve()``.

        Compression is off unless you pass ``compression="deflate"``: chat messages are short, and a
        deflate context per connection costs more memory than the messages it would save.

        ``close_timeout`` is ``kick_timeout`` (1 s) unless you pass it. After a keepalive timeout, websockets
        waits ``close_timeout`` for a close frame before the handler ends, so a peer that went silent stays
        in its room for ``ping_interval + ping_timeout + close_timeout``: 20 + 20 + 1 s, not 20 + 20 + 10.
        """
        serve_kwargs.setdefault("max_size", self.max_size)
        serve_kwargs.setdefault("compression", None)
        serve_kwargs.setdefault("close_timeout", self.kick_timeout)
        self.hosts.add(host if ":" not in host else f"[{host}]")
        self.server = await wslab_start(self.handler, name=name, host=host, port=port, process_request=self.process_request, **serve_kwargs)
        self.server.before_stop.append(self._announce_stop)
        return self.server

    def _announce_stop(self) -> None:
        """As the server stops: a ``closing`` message to every client, so a page behind a proxy knows why."""
        connections = [c.connection for c in self.clients if not c.closing]
        broadcast(connections, encode_bytes({"type": "closing", "code": 1001, "reason": "server stopping"}), text=True)

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
        """Check Host; serve the page and /health; check path, Origin, caps and token of WebSocket requests.

        A header that must come once but came twice (``Origin``, ``Authorization``) gets 400.
        """
        try:
            return self._check_request(connection, request)
        except RepeatedHeader as exc:
            return _refuse(connection, HTTPStatus.BAD_REQUEST, str(exc))

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        hosts = request.headers.get_all("Host")
        host = hosts[0] if len(hosts) == 1 else ""
        name = re.sub(r":\d+$", "", host).lower()
        if name not in self.hosts:  # DNS rebinding: a name that now points here, but that we do not serve
            what = f"Host {name[:80]!r}" if len(hosts) == 1 else "a request without exactly one Host header"
            return _refuse(connection, HTTPStatus.MISDIRECTED_REQUEST, f"This chat does not answer to {what}: pass hosts=[...] to ChatServer.")
        path = request.path.partition("?")[0]  # not urlsplit(): "//[x" is a path, but no URL
        upgrade = (header(request.headers, "Upgrade") or "").lower().replace(" ", "").split(",")
        if "websocket" not in upgrade:
            if path == "/":
                return _respond(connection, HTTPStatus.OK, page(), "text/html; charset=utf-8")
            if path == "/health":
                body = json.dumps({"status": "ok", "rooms": len(self.rooms), "clients": len(self.clients)})
                return _respond(connection, HTTPStatus.OK, body + "\n", "application/json")
            if path == WS_PATH:
                return None  # a broken WebSocket request: websockets answers 426 Upgrade Required
            return _refuse(connection, HTTPStatus.NOT_FOUND, f"Not found: the chat page is at /, the WebSocket at {WS_PATH}.")
        if path != WS_PATH:
            return _refuse(connection, HTTPStatus.NOT_FOUND, f"No WebSocket here: connect to {WS_PATH}.")
        origin = header(request.headers, "Origin")
        if origin is not None and not self._origin_allowed(origin, host):
            return _refuse(connection, HTTPStatus.FORBIDDEN, f"Origin {origin[:80]} is not allowed.")
        full = self._full(self.client_ip(connection))
        if full:
            response = _refuse(connection, HTTPStatus.SERVICE_UNAVAILABLE, f"Try again later: {full}.")
            response.headers["Retry-After"] = "5"
            return response
        if self.token is not None and self.auth == "query" and not self._token_ok(_query_token(request)):
            return _refuse(connection, HTTPStatus.UNAUTHORIZED, f"Missing or invalid token: send 'Authorization: Bearer <token>' or ?{TOKEN_PARAM}=<token>.")
        return None

    def client_ip(self, connection: ServerConnection) -> str:
        """The address a client is capped by: its peer's (a subclass behind a proxy may know better)."""
        return _ip(connection)

    def _origin_allowed(self, origin: str, host: str) -> bool:
        if origin in self.origins:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:  # such as "http://[x": no origin a browser sends
            return False
        return parts.scheme in ("http", "https") and parts.netloc == host  # the page this server served

    def _full(self, ip: str) -> str | None:
        """Why one more connection from ``ip`` is refused, or None."""
        if len(self.clients) >= self.max_clients:
            return f"the chat has its maximum of {self.max_clients} clients"
        if ip not in self.proxies and self.per_ip[ip] >= self.max_per_ip:
            return f"{self.max_per_ip} connections from your address already"
        return None

    def _token_ok(self, token: str | None) -> bool:
        assert self.token is not None
        return token is not None and hmac.compare_digest(token.encode(), self.token.encode())

    # -- WebSocket --------------------------------------------------------------------------

    async def handler(self, connection: ServerConnection) -> None:
        """One client: greet it, authenticate it if needed, then handle its messages until it goes.

        A ``ping`` is answered here, at once, with ``pong``: it is about the connection, not the chat, and
        has a limit of its own, so that the pings of a page never count against its messages.
        """
        client = Client(connection, self.client_ip(connection))
        full = self._full(client.ip)  # handshakes that passed the check together may overshoot it
        if full:
            self.close(client, CloseCode.TRY_AGAIN_LATER, f"try again later: {full}")
        self.clients.add(client)
        self.per_ip[client.ip] += 1
        try:
            needs_auth = self.token is not None and self.auth == "message"
            self.reply(client, {"type": "hello", "limits": LIMITS, "history": self.history, "auth": needs_auth, "heartbeat": self.heartbeat})
            if needs_auth and not client.closing:
                await self._authenticate(client)
            limit, pings = RateLimit(self.rate, self.burst), RateLimit(PING_RATE, PING_BURST)
            async for data in connection:
                if client.closing:
                    continue  # read on, so that the client's answer to our close frame gets through
                try:
                    message = parse_client(data, self.client_types)
                except ChatError as exc:
                    if self._within(client, limit):  # a refused message counts like any other
                        self._refuse(client, exc)
                    continue
                if message["type"] == "ping":  # a limit of its own: a page's pings never cost it a message
                    if self._within(client, pings):
                        self.reply(client, {"type": "pong"})
                elif self._within(client, limit):
                    try:
                        self.receive(client, message)
                    except ChatError as exc:
                        self._refuse(client, exc)
        except ConnectionClosed:  # vanished, or closed with an error code: leave all the same
            pass
        finally:
            self.clients.discard(client)
            self._behind.discard(client)
            self.per_ip[client.ip] -= 1
            if not self.per_ip[client.ip]:
                del self.per_ip[client.ip]
            self._leave(client)

    def _within(self, client: Client, limit: RateLimit) -> bool:
        """True if ``client`` may send one more message under ``limit``; else close it with 1008 and say False."""
        if limit.allow():
            return True
        self.close(client, CloseCode.POLICY_VIOLATION, "rate limit exceeded")
        return False

    def _refuse(self, client: Client, error: ChatError) -> None:
        """Answer a message that was refused with an ``error``, to its sender only."""
        print(f"error {error.code}: {error}")
        self.reply(client, {"type": "error", "code": error.code, "error": str(error)})

    async def _authenticate(self, client: Client) -> None:
        """Wait for ``{"type": "auth", "token": ...}``; close with 1008 on anything else or after auth_timeout."""
        try:
            async with asyncio.timeout(self.auth_timeout):
                data = await client.connection.recv()
        except TimeoutError:
            self.close(client, CloseCode.POLICY_VIOLATION, "authentication timeout")
            return
        try:
            token = parse_client(data, AUTH_TYPES)["token"]
        except ChatError:
            token = None
        if self._token_ok(token):
            self.reply(client, {"type": "authenticated"})
        else:
            print("error auth-failed")
            self.reply(client, {"type": "error", "code": "auth-failed", "error": 'the first message must be {"v": 1, "type": "auth", "token": ...} with the right token'})
            self.close(client, CloseCode.POLICY_VIOLATION, "authentication failed")

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
        key = nick_key(nick)
        if target is not None and target.keys.get(key, client) is not client:
            raise ChatError("nick-taken", f"nickname {nick!r} is taken in room {name!r}: pick another")
        self._leave(client, forget=client.room != name)  # re-joining keeps the room and its history
        room = self.rooms.get(name) or self.rooms.setdefault(name, _Room(deque(maxlen=self.history)))
        client.room, client.nick = name, nick
        room.members[nick] = client
        room.keys[key] = client
        bisect.insort(room.names, nick)
        self._presence(name, room, "join", nick)
        room.late[client] = len(room.changes)  # it knows everything up to its own arrival
        self.reply(client, {"type": "joined", "room": name, "nick": nick, "members": room.names, "history": list(room.history)})
        print(f"{nick} joined {name}")

    def _say(self, client: Client, text: str) -> None:
        assert client.room is not None
        room = self.rooms[client.room]
        room.seq += 1
        entry = {"seq": room.seq, "nick": client.nick, "text": text}
        room.history.append(entry)
        self.broadcast(client.room, {"type": "message", "room": client.room, **entry})

    def _leave(self, client: Client, forget: bool = True) -> None:
        """Take ``client`` out of its room; the room is forgotten when it empties (unless not ``forget``)."""
        name, nick = client.room, client.nick
        if name is None or nick is None:
            return
        client.room = client.nick = None
        room = self.rooms[name]
        del room.members[nick]
        del room.keys[nick_key(nick)]
        del room.names[bisect.bisect_left(room.names, nick)]
        room.late.pop(client, None)
        self._note(client, f"{nick} left {name}")
        if room.members or not forget:
            self._presence(name, room, "leave", nick)
        else:
            if room.flush is not None:
                room.flush.cancel()
            del self.rooms[name]  # an empty room is forgotten, history included

    # -- delivery ---------------------------------------------------------------------------

    def _presence(self, name: str, room: _Room, event: str, nick: str) -> None:
        """Note a join or leave; members hear of it in one message per ``presence_delay``."""
        room.changes.append({"event": event, "nick": nick})
        if room.flush is None:
            room.flush = asyncio.get_running_loop().call_later(self.presence_delay, self._flush_presence, name)

    def _flush_presence(self, name: str) -> None:
        """Send the room's pending presence news: the whole batch to members who were there before it."""
        room = self.rooms.get(name)
        if room is None or not room.changes:
            return
        if room.flush is not None:
            room.flush.cancel()
        changes, late = room.changes, room.late
        room.changes, room.late, room.flush = [], {}, None
        count = len(room.members)
        before = [c for c in room.members.values() if c not in late] if late else room.members.values()
        self._send(before, encode_bytes({"type": "presence", "room": name, "changes": changes, "count": count}))
        for client, known in late.items():
            if changes[known:]:
                self._send([client], encode_bytes({"type": "presence", "room": name, "changes": changes[known:], "count": count}))

    def broadcast(self, room: str, message: dict[str, Any], exclude: Client | None = None) -> None:
        """Send ``message`` to every member of ``room`` (but ``exclude``); never waits on a slow client."""
        self._flush_presence(room)  # news of who is here comes before what they say
        members = self.rooms[room].members.values()
        self._send([c for c in members if c is not exclude] if exclude else members, encode_bytes(message))

    def reply(self, client: Client, message: dict[str, Any]) -> None:
        """Send ``message`` to ``client`` only."""
        self._send([client], encode_bytes(message))

    def _send(self, clients: Iterable[Client], data: bytes) -> None:
        """Write ``data`` (one encoding for everyone) to each client's transport, then apply the slow rule."""
        clients = [c for c in clients if not c.closing]
        broadcast([c.connection for c in clients], data, text=True)
        now = time.monotonic()
        for client in clients:
            unsent = client.connection.transport.get_write_buffer_size()
            if not unsent:
                client.behind_since = None  # everything went out: it keeps up
            elif unsent > self.max_buffer:
                self._too_slow(client, f"more than {self.max_buffer // 1024} KiB unsent")
            elif client.behind_since is None:
                client.behind_since = now
                self._behind.add(client)
                if len(self._behind) == 1:
                    self._spawn(self._watch())
            elif now - client.behind_since > self.slow_after:
                self._too_slow(client, f"data waiting for over {self.slow_after:g} s")

    async def _watch(self) -> None:
        """While some clients have unsent data: see whether it drained, or has waited too long."""
        while self._behind:
            await asyncio.sleep(self.slow_after / 4)
            now = time.monotonic()
            for client in list(self._behind):
                if client.closing or not client.connection.transport.get_write_buffer_size():
                    client.behind_since = None
                    self._behind.discard(client)
                elif client.behind_since is not None and now - client.behind_since > self.slow_after:
                    self._too_slow(client, f"data waiting for over {self.slow_after:g} s")

    def _too_slow(self, client: Client, why: str) -> None:
        self.kicked += 1
        self._note(client, f"{client.nick or 'a client'} is too slow: {why}")
        self.close(client, CloseCode.POLICY_VIOLATION, f"too slow: {why}")

    def _note(self, client: Client, line: str) -> None:
        """Write ``line`` to the transcript under ``client``'s name, whichever client's message caused it."""
        try:
            label = self.server.label(client.connection) if self.server is not None else None
        except KeyError:  # not one of this server's connections (a handler run by someone else)
            label = None
        if label is None or self.server is None:
            print(line)
        else:
            self.server.transcript.add(f"{label}: {line}")

    def close(self, client: Client, code: int, reason: str) -> None:
        """Tell ``client`` why in a ``closing`` message, then close with ``code``; abort if it cannot take it.

        Browsers behind some proxies see neither the close code nor the reason (only 1005 or 1006),
        so the ``closing`` message is how a page learns why it was disconnected.
        """
        if client.closing:
            return
        client.closing = True
        broadcast([client.connection], encode_bytes({"type": "closing", "code": code, "reason": reason}), text=True)
        self._behind.discard(client)
        self._leave(client)
        self._spawn(self._close(client.connection, code, reason))

    async def _close(self, connection: ServerConnection, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(self.kick_timeout):
                await connection.close(code, reason)
        except TimeoutError:  # its buffers are full, so it cannot read the close frame either
            connection.transport.abort()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def page() -> str:
    """The browser client: one HTML file with inline JavaScript, shipped with the package."""
    return resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")


@functools.cache
def _csp() -> str:
    """A Content-Security-Policy that allows exactly the page's own inline script and style."""
    html = page()
    hashes = {}
    for tag in ("script", "style"):
        body = re.search(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        assert body is not None
        hashes[tag] = base64.b64encode(hashlib.sha256(body.group(1).encode()).digest()).decode()
    return (f"default-src 'none'; script-src 'sha256-{hashes['script']}'; style-src 'sha256-{hashes['style']}'; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'")


def _respond(connection: ServerConnection, status: HTTPStatus, body: str, content_type: str) -> Response:
    response = connection.respond(status, body)
    del response.headers["Content-Type"]  # respond() set text/plain; setting it again would add a second header
    response.headers["Content-Type"] = content_type
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if content_type.startswith("text/html"):
        response.headers["Content-Security-Policy"] = _csp()
        response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _refuse(connection: ServerConnection, status: HTTPStatus, sentence: str) -> Response:
    response = connection.respond(status, sentence + "\n")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _ip(connection: ServerConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if address else ""


def _query_token(request: Request) -> str | None:
    """The token of the query-string form: ``Authorization: Bearer <token>``, else ``?chat_token=<token>``."""
    scheme, _, value = (header(request.headers, "Authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    values = parse_qs(request.path.partition("?")[2]).get(TOKEN_PARAM)
    return values[0] if values else None
