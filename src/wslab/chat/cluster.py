"""The chat with its rooms behind a bus: the same protocol, on one process or on several sharing Redis.

A :class:`ClusterChat` keeps only its own connections; who is in a room, the history and the order of
events live in the bus (:mod:`wslab.chat.bus`). Every message goes to the bus first and comes back to each
process, this one included, in the room's one order: that is how members on different processes chat.

>>> chat = ClusterChat(bus=RedisBus(redis.url))          # doctest: +SKIP
>>> await chat.start()                                   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter, deque
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from ..guards import header
from ..transcript import visible
from .bus import Bus, BusUnavailable, EventId, LocalBus, RedisBus
from .protocol import ChatError, encode_bytes, nick_key
from .server import ChatServer, Client, _respond

__all__ = ["ClusterChat", "forwarded_ip"]

RECENT = 4096  # events per room kept in memory, to catch a joining member up without asking the bus
DEPARTURES = 2.0  # seconds stop() gives the members' departures to reach the bus before it closes


def forwarded_ip(connection: ServerConnection, proxies: set[str]) -> str:
    """The client's address: the last ``X-Forwarded-For`` entry if the peer is a trusted proxy, else the peer.

    Only the proxy's own entry can be trusted (it appends the address it saw); anything before it was
    written by the client. A client that connects directly cannot choose its address this way.
    """
    address = connection.remote_address
    peer = str(address[0]) if address else ""
    if peer in proxies:
        forwarded = header(connection.request.headers, "X-Forwarded-For") if connection.request else None
        if forwarded:
            return forwarded.rsplit(",", 1)[-1].strip()
    return peer


class ClusterChat(ChatServer):
    """:class:`ChatServer` with rooms, presence and history in ``bus`` (default: a :class:`LocalBus`).

    - ``trusted_proxies``: peers whose ``X-Forwarded-For`` names the real client (logs, per-IP caps).
    - ``drain()``: ``/health`` answers 503 ``draining`` and new handshakes are refused (so a proxy stops
      routing here); after ``grace`` seconds every client is closed with 1012 (service restart), once the
      messages already received are on the bus.
    - A :class:`RedisBus` is named after the chat (``"chat bus"`` for ``start(name="chat")``): starting a
      chat of the same name again replaces both, and ``wslab.stop_all()`` stops both.
    """

    def __init__(self, *, bus: Bus | None = None, trusted_proxies: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bus = bus if bus is not None else LocalBus(self.history)
        self.trusted_proxies = set(trusted_proxies)
        self.local: dict[str, dict[str, Client]] = {}  # room -> nick_key -> this process's member
        self.draining = False
        self._since: dict[Client, EventId] = {}  # joined at this event: skip the events up to it
        self._pending: dict[str, list[tuple[EventId, dict[str, str]]]] = {}  # presence news not sent yet
        self._counts: dict[str, int] = {}  # members in the room after the latest pending change
        self._recent: dict[str, deque[tuple[EventId, dict[str, Any]]]] = {}  # the latest events delivered here
        self._chains: dict[Client, asyncio.Task[None]] = {}  # each client's messages, handled in order
        self._renaming: dict[Client, tuple[str, str]] = {}  # old and new nickname, until the old one's leave passes
        self._departures: set[asyncio.Task[None]] = set()  # members being released on the bus
        self._joining: Counter[str] = Counter()  # rooms with a join waiting for the bus

    async def start(self, *, name: str = "chat", **kwargs: Any) -> Any:
        """Start the bus (:class:`BusUnavailable` if it cannot be reached), then serve as ``name``."""
        if isinstance(self.bus, RedisBus):
            self.bus.name = f"{name} bus"
        await self.bus.start(self._deliver, self._members)
        try:
            server = await super().start(name=name, **kwargs)
        except BaseException:
            await self.bus.close()
            raise
        # However the server is stopped (``async with``, ``server.stop()``, ``stop_all()``), the bus stops after it
        server.after_stop.append(self._close_bus)
        return server

    async def stop(self) -> None:
        """Stop serving, then close the bus (as ``server.stop()`` does)."""
        if self.server is not None:
            await self.server.stop()
        await self._close_bus()

    async def _close_bus(self) -> None:
        """Give the members' departures up to ``DEPARTURES`` s to reach the bus, then close it."""
        pending = [*self._departures, *self._chains.values()]
        if pending:
            await asyncio.wait(pending, timeout=DEPARTURES)
        await self.bus.close()

    def _members(self) -> list[tuple[str, str, str]]:
        return [(room, key, client.nick) for room, members in self.local.items() for key, client in members.items() if client.nick]

    # -- HTTP -------------------------------------------------------------------------------

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """As the chat's, with ``/health`` that reports draining (503) and no new WebSocket while draining."""
        answer = super().process_request(connection, request)
        if answer is not None and answer.status_code == HTTPStatus.MISDIRECTED_REQUEST:
            return answer
        path = request.path.split("?", 1)[0]
        if path == "/health":
            status = "draining" if self.draining else "ok"
            body = json.dumps({"status": status, "node": self.bus.node, "rooms": len(self.local), "clients": len(self.clients)})
            code = HTTPStatus.SERVICE_UNAVAILABLE if self.draining else HTTPStatus.OK
            return _respond(connection, code, body + "\n", "application/json")
        if self.draining and answer is None:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Draining: this chat process is restarting.\n")
        return answer

    def client_ip(self, connection: ServerConnection) -> str:
        """The real client's address: from ``X-Forwarded-For`` when a trusted proxy connects."""
        return forwarded_ip(connection, self.trusted_proxies)

    async def handler(self, connection: ServerConnection) -> None:
        print(f"connection from {self.client_ip(connection)}")
        await super().handler(connection)

    # -- messages ---------------------------------------------------------------------------

    def receive(self, client: Client, message: dict[str, Any]) -> None:
        """Queue ``message`` behind the client's previous ones: each may wait for the bus, in order."""
        previous = self._chains.get(client)
        task = asyncio.create_task(self._handle(client, message, previous))
        self._chains[client] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, client: Client, message: dict[str, Any], previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        try:
            await self.areceive(client, message)
        except ChatError as exc:
            print(f"error {exc.code}: {exc}")
            self.reply(client, {"type": "error", "code": exc.code, "error": str(exc)})
        except BusUnavailable:
            print("error unavailable: the message bus is unreachable")
            self.reply(client, {"type": "error", "code": "unavailable", "error": "the chat's message bus is unreachable: try again soon"})
        except Exception as exc:  # a bug: this client only gets 1011, as the one-process chat's handler would
            print(visible(f"error internal: {type(exc).__name__}: {exc}"))
            self.close(client, CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            if self._chains.get(client) is asyncio.current_task():
                del self._chains[client]

    async def areceive(self, client: Client, message: dict[str, Any]) -> None:
        """Act on one valid ``message``; like ``receive()`` of the chat, but it may await the bus."""
        kind = message["type"]
        if client.closing:
            return
        if kind == "join":
            await self._ajoin(client, message["room"], message["nick"])
        elif client.room is None or client.nick is None:
            raise ChatError("not-joined", f"join a room before you {kind}: send {{\"v\": 1, \"type\": \"join\", \"room\": ..., \"nick\": ...}}")
        elif kind == "say":
            await self.bus.say(client.room, client.nick, message["text"])
        else:
            room = client.room
            await self._aleave(client)
            self.reply(client, {"type": "left", "room": room})

    async def _ajoin(self, client: Client, room: str, nick: str) -> None:
        key = nick_key(nick)
        holder = self.local.get(room, {}).get(key)
        if holder is not None and holder is not client:
            raise ChatError("nick-taken", f"nickname {nick!r} is taken in room {room!r}: pick another")
        if client.room == room and client.nick is not None and nick_key(client.nick) != key:
            await self._rename(client, room, key, nick)
            return
        if client.room is not None:
            await self._aleave(client)
        self._joining[room] += 1
        try:
            joined = await self.bus.join(room, key, nick)
            if joined is None:
                raise ChatError("nick-taken", f"nickname {nick!r} is taken in room {room!r}: pick another")
            try:
                seen, missed = await self._catch_up(room, joined.id)
            except BusUnavailable:  # the claim stands in Redis, but this member would miss events: undo it
                await self._release(room, key, nick)
                raise
            if client.closing or client not in self.clients:  # it went away while we waited
                await self._release(room, key, nick)
                return
            print(f"{nick} joined {room}")  # before the answer: whoever reads the answer finds it logged
            self.reply(client, {"type": "joined", "room": room, "nick": nick, "members": joined.members, "history": joined.history})
            for event in missed:
                self._send([client], self._encode(room, event))
            client.room, client.nick = room, nick
            self.local.setdefault(room, {})[key] = client
            self._since[client] = seen  # it knows the room up to here: later news only
        finally:
            self._joining[room] -= 1
            if not self._joining[room]:
                del self._joining[room]
                if room not in self.local:  # nobody here after all: stop reading the room
                    self.bus.unwatch(room)

    async def _rename(self, client: Client, room: str, key: str, nick: str) -> None:
        """A member joins its room again as ``nick``: the new name first, so the room (and its history) stays.

        The others hear of the new name joining, then of the old one leaving (the one-process chat says it the
        other way round); the member itself hears of neither, and goes on receiving the room's events.
        """
        assert client.nick is not None
        old_key, old_nick = nick_key(client.nick), client.nick
        joined = await self.bus.join(room, key, nick)
        if joined is None:
            raise ChatError("nick-taken", f"nickname {nick!r} is taken in room {room!r}: pick another")
        self._renaming[client] = (old_nick, nick)
        await self._release(room, old_key, old_nick)
        if client.closing or client not in self.clients:  # it went away while we waited
            self._renaming.pop(client, None)
            await self._release(room, key, nick)
            return
        self._note(client, f"{old_nick} left {room}")
        print(f"{nick} joined {room}")
        members = self.local[room]
        del members[old_key]
        members[key], client.nick = client, nick
        others = [name for name in joined.members if name != old_nick]
        self.reply(client, {"type": "joined", "room": room, "nick": nick, "members": others, "history": joined.history})

    def _news_for(self, client: Client, changes: list[dict[str, str]]) -> list[dict[str, str]]:
        """``changes`` without those about ``client``'s own renaming (it never hears of itself)."""
        names = self._renaming.get(client)
        if names is None:
            return changes
        old_nick, new_nick = names
        own = [{"event": "join", "nick": new_nick}, {"event": "leave", "nick": old_nick}]  # in this order
        kept = []
        for change in changes:
            if own and change in own:
                if change == own[-1]:  # the old name's leave: the last news of the renaming
                    own.clear()
                    del self._renaming[client]
            else:
                kept.append(change)
        return kept

    async def _catch_up(self, room: str, since: EventId) -> tuple[EventId, list[dict[str, Any]]]:
        """Watch ``room`` from ``since``; the events this process delivered meanwhile, and the last one's id."""
        self.bus.watch(room, since)
        seen, missed = since, []
        while self.bus.positions.get(room, seen) > seen:  # events this process delivered while we waited
            until = self.bus.positions[room]
            recent = self._recent.get(room, ())
            if recent and recent[0][0] <= seen:  # still in memory: no need to ask the bus
                missed += [event for event_id, event in recent if event_id > seen]
            else:
                missed += [event for _, event in await self.bus.events(room, seen, until)]
            seen = until
        return seen, missed

    def _forget_local(self, client: Client) -> tuple[str, str, str] | None:
        room, nick = client.room, client.nick
        if room is None or nick is None:
            return None
        key = nick_key(nick)
        client.room = client.nick = None
        self._since.pop(client, None)
        self._renaming.pop(client, None)
        members = self.local.get(room, {})
        if members.get(key) is client:
            del members[key]
        if not members:
            self.local.pop(room, None)
            self._recent.pop(room, None)
            if room not in self._joining:
                self.bus.unwatch(room)
        self._note(client, f"{nick} left {room}")
        return room, key, nick

    async def _aleave(self, client: Client) -> None:
        held = self._forget_local(client)
        if held is not None:
            await self.bus.leave(*held)

    def _leave(self, client: Client, forget: bool = True) -> None:
        """The chat calls this when a client goes (or is closed): forget it here, release it on the bus."""
        held = self._forget_local(client)
        if held is not None:
            task = asyncio.create_task(self._release(*held))
            self._departures.add(task)
            task.add_done_callback(self._departures.discard)

    async def _release(self, room: str, key: str, nick: str) -> None:
        with contextlib.suppress(BusUnavailable):  # if Redis is gone, the bus releases it once Redis answers
            await self.bus.leave(room, key, nick)

    # -- delivery ---------------------------------------------------------------------------

    def _encode(self, room: str, event: dict[str, Any]) -> bytes:
        if event["type"] == "message":
            return encode_bytes({"type": "message", "room": room, "seq": event["seq"], "nick": event["nick"], "text": event["text"]})
        change = {"event": event["event"], "nick": event["nick"]}
        return encode_bytes({"type": "presence", "room": room, "changes": [change], "count": event["count"]})

    def _deliver(self, room: str, event_id: EventId, event: dict[str, Any]) -> None:
        """One room event from the bus: send it to this process's members of the room.

        Presence news is gathered for ``presence_delay`` and sent as one message (a join burst costs each
        member one message, not one per joiner); a chat message first sends the news gathered so far.
        """
        if not self.local.get(room):
            return
        self._recent.setdefault(room, deque(maxlen=RECENT)).append((event_id, event))
        if event["type"] == "presence":
            pending = self._pending.setdefault(room, [])
            pending.append((event_id, {"event": event["event"], "nick": event["nick"]}))
            self._counts[room] = event["count"]
            if len(pending) == 1:
                asyncio.get_running_loop().call_later(self.presence_delay, self._flush, room)
            return
        self._flush(room)
        self._send(self._after(room, event_id), self._encode(room, event))

    def _after(self, room: str, event_id: EventId) -> list[Client]:
        """The room's members here that have not seen ``event_id`` yet (a member joined at or after it has)."""
        members = self.local.get(room, {}).values()
        if not self._since:
            return list(members)
        return [c for c in members if c not in self._since or self._since[c] < event_id]

    def _flush(self, room: str) -> None:
        """Send the room's gathered presence news: to each member, the changes after its own join."""
        pending = self._pending.pop(room, None)
        if not pending or not self.local.get(room):
            return
        count = self._counts.pop(room, 0)
        everyone = [c for c in self._after(room, pending[0][0]) if c not in self._renaming]  # saw none of it
        changes = [change for _, change in pending]
        self._send(everyone, encode_bytes({"type": "presence", "room": room, "changes": changes, "count": count}))
        got = set(everyone)
        for client in [c for c in self.local[room].values() if c not in got]:
            seen = self._since.get(client, (0, 0))
            later = self._news_for(client, [change for event_id, change in pending if event_id > seen])
            if later:
                self._send([client], encode_bytes({"type": "presence", "room": room, "changes": later, "count": count}))
        last = pending[-1][0]
        for client in [c for c, seen in self._since.items() if seen <= last]:
            del self._since[client]

    # -- draining ---------------------------------------------------------------------------

    async def drain(self, grace: float = 1.0) -> None:
        """Report draining, wait ``grace`` s, let received messages reach the bus, then close clients with 1012."""
        self.draining = True
        print(f"draining: /health says so; closing {len(self.clients)} clients in {grace:g} s")
        await asyncio.sleep(grace)
        chains = list(self._chains.values())
        if chains:
            await asyncio.wait(chains, timeout=5)
        for client in list(self.clients):
            self.close(client, CloseCode.SERVICE_RESTART, "service restart")
