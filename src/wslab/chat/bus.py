"""Where a chat's rooms live: one interface, two implementations (in this process, or shared over Redis).

A bus holds each room's members (unique nicknames), its history and its sequence numbers, and hands every
room event (a message, a join, a leave) to ``deliver(room, event_id, event)`` of every chat process that
watches the room, in one order for everyone.

- :class:`LocalBus`: dicts in this process, events delivered at once (one chat process, like chapter 05).
- :class:`RedisBus`: a Redis Stream per room (``XADD`` with a bounded ``MAXLEN``), read by each process
  with ``XREAD`` from the last id it saw, so a process that loses Redis for a while misses nothing that is
  still in the stream; members in a hash per room, each owned by a process whose heartbeat key has a TTL.

>>> bus = RedisBus("unix:///tmp/.../redis.sock")      # doctest: +SKIP
>>> chat = ClusterChat(bus=bus)                        # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Bus", "BusUnavailable", "EventId", "Joined", "LocalBus", "RedisBus"]

EventId = tuple[int, int]  # a Redis stream id ("1700000000000-3") as a pair, so that ids compare in order
Deliver = Callable[[str, EventId, dict[str, Any]], None]
Members = Callable[[], Iterable[tuple[str, str, str]]]  # this process's (room, key, nick), to claim again


class BusUnavailable(ConnectionError):
    """The broker cannot be reached just now; the message that needed it is refused (and counted)."""


@dataclass(frozen=True, slots=True)
class Joined:
    """A successful join: the id of its own presence event, and the room as it was at that event."""

    id: EventId
    members: list[str]
    history: list[dict[str, Any]]


class Bus(ABC):
    """Rooms, members, history and the room events, for one chat process (``node``) among others."""

    def __init__(self) -> None:
        self.node = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.positions: dict[str, EventId] = {}  # the rooms this process watches: the last event delivered
        self._deliver: Deliver = lambda room, event_id, event: None

    async def start(self, deliver: Deliver, members: Members = tuple) -> None:
        """Begin handing room events to ``deliver``; ``members`` lists this process's members (for claims)."""
        self._deliver = deliver

    async def close(self) -> None:
        """Stop reading events and release what this process holds."""

    def watch(self, room: str, after: EventId) -> None:
        """Deliver ``room``'s events that come after ``after`` (if the room is not watched already)."""
        self.positions.setdefault(room, after)

    def unwatch(self, room: str) -> None:
        """Stop delivering ``room``'s events (its last local member left)."""
        self.positions.pop(room, None)

    @abstractmethod
    async def join(self, room: str, key: str, nick: str) -> Joined | None:
        """Claim ``key`` (see ``nick_key``) in ``room`` for ``nick``; None if another member holds it."""

    @abstractmethod
    async def say(self, room: str, nick: str, text: str) -> None:
        """Append a message (with the room's next sequence number) to history and to the room's events."""

    @abstractmethod
    async def leave(self, room: str, key: str, nick: str) -> None:
        """Release ``nick``; an emptied room forgets its history."""

    @abstractmethod
    async def events(self, room: str, after: EventId, until: EventId) -> list[tuple[EventId, dict[str, Any]]]:
        """The room's events after ``after`` up to ``until`` included (to catch a joining member up)."""


@dataclass(slots=True)
class _LocalRoom:
    history: deque[dict[str, Any]]
    members: dict[str, str] = field(default_factory=dict)  # nick_key -> nick
    seq: int = 0


class LocalBus(Bus):
    """Everything in this process: what one chat process needs, and the model the Redis bus follows."""

    def __init__(self, history: int = 20) -> None:
        super().__init__()
        self.history = history
        self.rooms: dict[str, _LocalRoom] = {}
        self._count = 0

    def _publish(self, room: str, event: dict[str, Any]) -> EventId:
        self._count += 1
        event_id = (0, self._count)
        if room in self.positions:
            self.positions[room] = event_id
            self._deliver(room, event_id, event)
        return event_id

    async def join(self, room: str, key: str, nick: str) -> Joined | None:
        state = self.rooms.setdefault(room, _LocalRoom(deque(maxlen=self.history)))
        if key in state.members:
            return None
        state.members[key] = nick
        event_id = self._publish(room, {"type": "presence", "event": "join", "nick": nick, "count": len(state.members)})
        return Joined(event_id, sorted(state.members.values()), list(state.history))

    async def say(self, room: str, nick: str, text: str) -> None:
        state = self.rooms[room]
        state.seq += 1
        entry = {"seq": state.seq, "nick": nick, "text": text}
        state.history.append(entry)
        self._publish(room, {"type": "message", **entry})

    async def leave(self, room: str, key: str, nick: str) -> None:
        state = self.rooms.get(room)
        if state is None or state.members.get(key) != nick:
            return
        del state.members[key]
        if not state.members:
            del self.rooms[room]
        self._publish(room, {"type": "presence", "event": "leave", "nick": nick, "count": len(state.members)})

    async def events(self, room: str, after: EventId, until: EventId) -> list[tuple[EventId, dict[str, Any]]]:
        return []  # events are delivered as they happen: a joining member has nothing to catch up


# Each script runs atomically in Redis: a claim and its presence event, or a message and its number,
# can never be split by another process's command. KEYS: members hash, stream, history list, seq, rooms set.
_JOIN = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return false end
redis.call('SADD', KEYS[5], ARGV[5])
local count = redis.call('HLEN', KEYS[1])
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'e', ARGV[3] .. count .. '}')
return {id, redis.call('HVALS', KEYS[1]), redis.call('LRANGE', KEYS[3], 0, -1)}
"""
_SAY = """
local seq = redis.call('INCR', KEYS[4])
local entry = '{"seq": ' .. seq .. ', ' .. ARGV[1]
redis.call('RPUSH', KEYS[3], entry)
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[3]), -1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'e', '{"type": "message", ' .. string.sub(entry, 2))
return seq
"""
_LEAVE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local count = redis.call('HLEN', KEYS[1])
if count == 0 then redis.call('DEL', KEYS[3], KEYS[4]); redis.call('SREM', KEYS[5], ARGV[5]) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'e', ARGV[3] .. count .. '}')
return 1
"""


def _parse_id(raw: bytes | str) -> EventId:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _format_id(event_id: EventId) -> str:
    return f"{event_id[0]}-{event_id[1]}"


class RedisBus(Bus):
    """Rooms shared by every chat process connected to the same Redis.

    - ``stream_length``: events kept per room stream (``XADD ... MAXLEN ~``): how far behind a process may
      fall (while disconnected from Redis) and still catch up without losing anything.
    - ``ttl``: a process's heartbeat key expires this many seconds after its last beat (beats every
      ``ttl / 3``); every ``ttl / 2`` each process removes members whose process has no heartbeat. A
      process killed with ``kill -9`` thus loses its members for everyone within ``1.5 × ttl``.
    - Losing Redis: reads and beats retry with exponential backoff (0.1 s doubling to 2 s, with jitter);
      meanwhile a ``say`` is refused with :class:`BusUnavailable` and counted in ``refused``; when Redis is
      back, this process claims its members again. A Redis restarted without persistence has lost
      history and sequence numbers (they start again at 1).
    """

    def __init__(self, url: str, *, prefix: str = "chat", history: int = 20, stream_length: int = 10_000,
                 ttl: float = 3.0) -> None:
        super().__init__()
        import redis.asyncio as aioredis

        self.url, self.prefix, self.history, self.stream_length, self.ttl = url, prefix, history, stream_length, ttl
        # Commands wait for one of a few connections rather than open one each (hundreds of joins at once)
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=16, timeout=30)
        self.redis = aioredis.Redis(connection_pool=pool)
        self.reader = aioredis.from_url(url)  # XREAD blocks: it gets a connection of its own
        self.reconnects = 0  # times the reader lost Redis and came back
        self.refused = 0  # messages refused while Redis was unreachable
        self.reaped = 0  # members of dead processes this process removed
        self._members: Members = tuple
        self._control = f"{prefix}:node:{self.node}:wake"  # XADD here wakes our XREAD to watch a new room
        self._control_id: EventId = (0, 0)
        self._scripts = {name: self.redis.register_script(lua) for name, lua in (("join", _JOIN), ("say", _SAY), ("leave", _LEAVE))}
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._wakes: set[asyncio.Task[None]] = set()

    def _keys(self, room: str) -> list[str]:
        base = f"{self.prefix}:room:{room}"
        return [f"{base}:members", f"{base}:log", f"{base}:history", f"{base}:seq", f"{self.prefix}:rooms"]

    def _owner(self, nick: str) -> str:
        return f"{self.node}\t{nick}"

    async def start(self, deliver: Deliver, members: Members = tuple) -> None:
        await super().start(deliver, members)
        self._members = members
        await self._beat()
        self._tasks = [asyncio.create_task(task) for task in (self._read(), self._heartbeat(), self._reap_loop())]

    async def close(self) -> None:
        if not self._tasks:
            return
        self._closing = True  # the reader ends after its XREAD, which the wake-up below ends at once
        reader, *others = self._tasks
        self._tasks = []
        for task in others:
            task.cancel()
        await self._wake()
        done, _ = await asyncio.wait([reader], timeout=2.0)  # (a blocked XREAD is not cancelled cleanly)
        if not done:
            reader.cancel()
        with contextlib.suppress(Exception):
            await self.redis.delete(self._control, f"{self.prefix}:node:{self.node}")
        await self.redis.aclose()
        await self.reader.aclose()

    async def _call(self, name: str, room: str, *args: Any) -> Any:
        import redis.exceptions

        try:
            return await self._scripts[name](keys=self._keys(room), args=list(args))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise BusUnavailable(f"Redis is unreachable: {exc}") from exc

    def watch(self, room: str, after: EventId) -> None:
        if room not in self.positions:
            super().watch(room, after)
            task = asyncio.create_task(self._wake())
            self._wakes.add(task)
            task.add_done_callback(self._wakes.discard)

    async def _wake(self) -> None:
        with contextlib.suppress(Exception):
            await self.redis.xadd(self._control, {"w": "1"}, maxlen=10, approximate=True)

    async def join(self, room: str, key: str, nick: str) -> Joined | None:
        head = json.dumps({"type": "presence", "event": "join", "nick": nick}, ensure_ascii=False)[:-1] + ', "count": '
        answer = await self._call("join", room, key, self._owner(nick), head, self.stream_length, room)
        if not answer:
            return None
        raw_id, owners, history = answer
        members = sorted(owner.decode().split("\t", 1)[1] for owner in owners)
        return Joined(_parse_id(raw_id), members, [json.loads(entry) for entry in history])

    async def say(self, room: str, nick: str, text: str) -> None:
        rest = json.dumps({"nick": nick, "text": text}, ensure_ascii=False)[1:]  # '"nick": ..., "text": ...}'
        try:
            await self._call("say", room, rest, self.stream_length, self.history)
        except BusUnavailable:
            self.refused += 1
            raise

    async def leave(self, room: str, key: str, nick: str) -> None:
        await self._release(room, key, self._owner(nick), nick)

    async def _release(self, room: str, key: str, owner: str, nick: str) -> bool:
        head = json.dumps({"type": "presence", "event": "leave", "nick": nick}, ensure_ascii=False)[:-1] + ', "count": '
        return bool(await self._call("leave", room, key, owner, head, self.stream_length, room))

    async def events(self, room: str, after: EventId, until: EventId) -> list[tuple[EventId, dict[str, Any]]]:
        entries = await self.redis.xrange(self._keys(room)[1], f"({_format_id(after)}", _format_id(until))
        return [(_parse_id(raw_id), json.loads(fields[b"e"])) for raw_id, fields in entries]

    async def _read(self) -> None:
        """Deliver the watched rooms' events, from the last id seen; reconnect with backoff when Redis goes."""
        import redis.exceptions

        delay, lost = 0.1, False
        while not self._closing:
            streams = {self._control: _format_id(self._control_id)}
            streams |= {self._keys(room)[1]: _format_id(after) for room, after in self.positions.items()}
            try:
                answer = await self.reader.xread(streams, count=1000, block=1000)
                if lost:  # Redis is back (perhaps restarted, and empty): claim our members again
                    await self._claim_again()
                    lost, delay = False, 0.1
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
                if not lost:
                    print(f"redis lost ({type(exc).__name__}): retrying with backoff", flush=True)
                    self.reconnects += 1
                lost = True
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 2.0)
                continue
            for stream, entries in answer or ():
                name = stream.decode()
                for raw_id, fields in entries:
                    event_id = _parse_id(raw_id)
                    if name == self._control:
                        self._control_id = event_id
                        continue
                    room = name.removeprefix(f"{self.prefix}:room:").removesuffix(":log")
                    if room in self.positions and event_id > self.positions[room]:
                        self.positions[room] = event_id
                        self._deliver(room, event_id, json.loads(fields[b"e"]))

    async def _claim_again(self) -> None:
        print("redis is back: claiming this process's members again", flush=True)
        await self._beat()
        for room, key, nick in list(self._members()):
            with contextlib.suppress(Exception):
                await self.join(room, key, nick)

    async def _beat(self) -> None:
        await self.redis.set(f"{self.prefix}:node:{self.node}", os.getpid(), px=int(self.ttl * 1000))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            with contextlib.suppress(Exception):
                await self._beat()

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 2)
            with contextlib.suppress(Exception):
                await self.reap()

    async def reap(self) -> int:
        """Remove the members of processes whose heartbeat expired; return how many this call removed."""
        removed = 0
        for raw_room in await self.redis.smembers(f"{self.prefix}:rooms"):
            room = raw_room.decode()
            owners = await self.redis.hgetall(self._keys(room)[0])
            alive: dict[str, bool] = {}
            for raw_key, raw_owner in owners.items():
                owner = raw_owner.decode()
                node, _, nick = owner.partition("\t")
                if node not in alive:
                    alive[node] = bool(await self.redis.exists(f"{self.prefix}:node:{node}"))
                if not alive[node] and await self._release(room, raw_key.decode(), owner, nick):
                    removed += 1
        self.reaped += removed
        return removed
