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
import functools
import hashlib
import json
import os
import random
import secrets
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..messages import MessageError, parse_message
from ..servers import _background, _in_loop_thread, _previous, _registry, _unregister
from ..transcript import visible
from .protocol import ChatError, checked_text

__all__ = ["BadEntry", "Bus", "BusUnavailable", "EventId", "Joined", "LocalBus", "RedisBus", "decode_event", "decode_owner"]

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
return {id, redis.call('HVALS', KEYS[1]), redis.call('LRANGE', KEYS[3], 0, -1), redis.call('GET', KEYS[4])}
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


# -- reading back what Redis holds: the one place where it becomes events, history and members --------

_MAX_NUMBER = 2**53  # larger sequence numbers and counts lose precision in a browser's JSON.parse
_SHAPES: dict[str, dict[str, type]] = {
    "message": {"seq": int, "nick": str, "text": str},
    "presence": {"event": str, "nick": str, "count": int},
}
_KINDS = {int: "an integer", str: "a string"}


class BadEntry(ValueError):
    """Something in Redis that this chat did not write: another version, a damaged or a foreign writer."""


def decode_event(raw: object, *, history: bool = False) -> dict[str, Any]:
    """A room event (with ``history``: a history entry) as Redis holds it, checked like a client's message.

    Whoever can write to the same Redis may have written anything there: bytes that are not UTF-8, JSON
    nested too deeply, huge numbers, lone surrogates, invisible or bidi characters, missing or mistyped
    fields. Anything but the shape this chat writes raises :class:`BadEntry`. What comes back has the
    known fields only, each fit to send to a browser.

    >>> decode_event(b'{"type": "message", "seq": 1, "nick": "ada", "text": "hi", "extra": []}')
    {'type': 'message', 'seq': 1, 'nick': 'ada', 'text': 'hi'}
    >>> decode_event(b'{"type": "message", "seq": 1, "nick": "\\\\u202eada", "text": "hi"}')
    Traceback (most recent call last):
    ...
    wslab.chat.bus.BadEntry: field 'nick' contains invisible format characters (zero-width or bidi controls): U+202E
    """
    if not isinstance(raw, bytes):
        raise BadEntry("no event field" if raw is None else f"expected bytes, got {type(raw).__name__}")
    try:
        message = parse_message(raw.decode("utf-8"), {})  # refuses deep nesting, huge numbers, NaN, surrogates
    except UnicodeDecodeError as exc:
        raise BadEntry(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except MessageError as exc:
        raise BadEntry(str(exc)) from None
    kind = "message" if history else message.get("type")
    if kind not in _SHAPES:
        raise BadEntry(f"unknown event type {str(kind)[:40]!r}")
    event: dict[str, Any] = {} if history else {"type": kind}
    for name, wanted in _SHAPES[kind].items():
        value = message.get(name)
        if type(value) is not wanted:  # exactly: true is not an integer here
            raise BadEntry(f"field {name!r} is missing or not {_KINDS[wanted]}")
        if wanted is int and not 0 <= value < _MAX_NUMBER:
            raise BadEntry(f"field {name!r} is out of range")
        event[name] = _text(name, value) if name in ("nick", "text") else value
    if kind == "presence" and event["event"] not in ("join", "leave"):
        raise BadEntry(f"presence event {event['event'][:20]!r} is neither join nor leave")
    return event


def decode_owner(raw: object) -> tuple[str, str]:
    """A member's owner as the members hash holds it (``node<TAB>nick``): the pair, or :class:`BadEntry`."""
    if not isinstance(raw, bytes):
        raise BadEntry(f"expected bytes, got {type(raw).__name__}")
    try:
        node, tab, nick = raw.decode("utf-8").partition("\t")
    except UnicodeDecodeError as exc:
        raise BadEntry(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not tab or not node:
        raise BadEntry("not a process id, a tab and a nickname")
    return node, _text("nick", nick)


def _text(name: str, value: str) -> str:
    try:
        return checked_text(name, value)
    except ChatError as exc:
        raise BadEntry(str(exc)) from None


def _preview(raw: object, limit: int = 60) -> str:
    """The start of ``raw`` as readable text (undecodable bytes as ``\\xff``); the caller escapes the rest."""
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else repr(raw)
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


T = TypeVar("T")


class RedisBus(Bus):
    """Rooms shared by every chat process connected to the same Redis.

    - ``stream_length``: events kept per room stream (``XADD ... MAXLEN ~``): how far behind a process may
      fall (while disconnected from Redis) and still catch up without losing anything. Messages trimmed
      before it read them are counted in ``trimmed`` and logged, with their sequence numbers.
    - ``ttl``: a process's heartbeat key expires this many seconds after its last beat (beats every
      ``ttl / 3``); every ``ttl / 2`` each process removes members whose process has no heartbeat. A
      process killed with ``kill -9`` thus loses its members for everyone within ``1.5 × ttl``. A process
      whose heartbeat lapsed while it lived (Redis paused, a blocked loop) claims its members again.
    - ``timeout``: how long Redis gets to answer one command. A Redis that does not answer in time
      (stopped, overloaded) counts as lost, like one that refuses the connection; a command never waits
      longer, and while Redis is lost every command is refused at once.
    - Losing Redis: reads and beats retry with exponential backoff (0.1 s doubling to 2 s, with jitter);
      meanwhile a ``say`` is refused with :class:`BusUnavailable` and counted in ``refused``; when Redis is
      back, this process claims its members again and does the leaves it could not. A Redis restarted
      without persistence has lost history and sequence numbers (they start again at 1).
    - What other writers left in Redis is checked as it is read (:func:`decode_event`): a bad entry is
      skipped, counted in ``skipped`` and logged once, escaped; it stops nothing else.
    - ``name``: how ``wslab.running()`` and ``wslab.stop_all()`` know this bus, which they stop (releasing
      its members, closing its connections), as they do at the interpreter's exit.
    """

    kind = "a Redis bus (RedisBus)"

    def __init__(self, url: str, *, prefix: str = "chat", history: int = 20, stream_length: int = 10_000,
                 ttl: float = 3.0, timeout: float = 2.0, name: str | None = None,
                 log: Callable[[str], None] = functools.partial(print, flush=True)) -> None:
        super().__init__()
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.url, self.prefix, self.history, self.stream_length, self.ttl = url, prefix, history, stream_length, ttl
        self.timeout, self.log = timeout, log
        self.name = name or f"redis bus {self.node}"
        self.port = 0  # (for wslab's registry of running things: a bus listens on no port)
        self.block = 1000  # ms an XREAD waits for new events before it asks again
        # Every command has its own deadline, and fails at once (no retries: losing Redis is handled here)
        bounded = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "retry": Retry(NoBackoff(), 0)}
        # Commands queue for one of a few connections (hundreds of joins at once) rather than open one each
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=_CONNECTIONS, timeout=timeout, **bounded)
        self.redis = aioredis.Redis.from_pool(pool)
        # XREAD blocks: it gets a connection of its own, whose answer may take the block time longer
        self.reader = aioredis.from_url(url, **{**bounded, "socket_timeout": timeout + self.block / 1000})
        self.available = True  # False from a failed command until the reader hears from Redis again
        self.reconnects = 0  # times the reader lost Redis and came back
        self.refused = 0  # messages refused while Redis was unreachable
        self.reaped = 0  # members of dead processes this process removed
        self.skipped = 0  # bad entries found in Redis (each logged once)
        self.trimmed = 0  # messages trimmed from a stream before this process read them (it fell behind)
        self._seqs: dict[str, int] = {}  # per room, the sequence number of the last message read
        self._members: Members = tuple
        self._owed: set[tuple[str, str, str]] = set()  # leaves refused while Redis was lost: done once it answers
        self._control = f"{prefix}:node:{self.node}:wake"  # XADD here wakes our XREAD to watch a new room
        self._control_id: EventId = (0, 0)
        self._scripts = {name: self.redis.register_script(lua) for name, lua in (("join", _JOIN), ("say", _SAY), ("leave", _LEAVE))}
        self._slots = asyncio.Semaphore(_CONNECTIONS)
        self._tasks: list[asyncio.Task[None]] = []
        self._wakes: set[asyncio.Task[None]] = set()
        self._broken: set[str] = set()  # rooms whose stream key holds something else: not read
        self._logged: OrderedDict[bytes, None] = OrderedDict()  # what was logged already (bounded)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Future[None] | None = None
        self._closed = False

    def _keys(self, room: str) -> list[str]:
        base = f"{self.prefix}:room:{room}"
        return [f"{base}:members", f"{base}:log", f"{base}:history", f"{base}:seq", f"{self.prefix}:rooms"]

    def _owner(self, nick: str) -> str:
        return f"{self.node}\t{nick}"

    # -- starting and stopping -----------------------------------------------------------------------

    async def start(self, deliver: Deliver, members: Members = tuple) -> None:
        """Beat once (:class:`BusUnavailable` if Redis cannot be reached), then read and beat in tasks."""
        previous = _previous(self.name, self.kind)  # NameTakenError if another kind runs under this name
        await super().start(deliver, members)
        self._members = members
        await self._beat()
        if previous is not None and previous is not self:  # a notebook cell run again: replace the old bus
            await previous.stop()
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(task) for task in (self._read(), self._heartbeat(), self._reap_loop())]
        _registry[self.name] = self

    async def close(self) -> None:
        """Stop reading and beating, release this process's members, close every connection; bounded.

        With Redis unreachable it takes at most about ``2 × timeout``: what it cannot release there, the
        other processes' reapers remove once this process's heartbeat expires.
        """
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = asyncio.get_running_loop().create_future()
        try:
            tasks = [*self._tasks, *self._wakes]
            self._tasks = []
            for task in tasks:  # the heartbeat and the reaper end at once if they sleep, else after one command
                task.cancel()
            with contextlib.suppress(Exception):  # a blocked XREAD ends when its socket closes (on 3.11,
                await self.reader.connection_pool.disconnect()  # redis-py may swallow a cancellation)
            if tasks:
                await asyncio.wait(tasks, timeout=2 * self.timeout)
            with contextlib.suppress(BusUnavailable):
                for room, key, nick in {*self._members(), *self._owed}:
                    await self.leave(room, key, nick)
                await self._command("close", lambda: self.redis.delete(self._control, f"{self.prefix}:node:{self.node}"))
            self._closed = True
            with contextlib.suppress(Exception):  # (redis-py bounds each disconnect by the timeout too)
                async with asyncio.timeout(self.timeout):
                    await asyncio.gather(self.redis.aclose(), self.reader.aclose())
        finally:
            self._closed = True
            _unregister(self)
            self._closing.set_result(None)

    async def stop(self) -> None:
        """:meth:`close`, as ``wslab.stop_all()`` calls it (from any event loop)."""
        if self._loop is None or self._loop is asyncio.get_running_loop():
            await self.close()
        else:
            self._stop_soon()

    def _stop_soon(self, close_timeout: float | None = None) -> None:
        """Close from synchronous code (the interpreter's exit, a test's teardown), where the loop allows."""
        loop = self._loop
        if loop is None or loop.is_closed():  # nothing can run there any more; the heartbeat TTL cleans up
            _unregister(self)
        elif loop.is_running():
            if _in_loop_thread(loop):
                task = loop.create_task(self.close())
                _background.add(task)
                task.add_done_callback(_background.discard)
            else:
                asyncio.run_coroutine_threadsafe(self.close(), loop)
        else:
            loop.run_until_complete(self.close())

    # -- commands: each bounded, each failure said in one way ------------------------------------------

    async def _command(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis command once one of the connections is free; :class:`BusUnavailable` however it fails.

        Refused at once while Redis is known to be lost; else bounded by ``timeout`` (the socket's).
        """
        import redis.exceptions

        if self._closed:
            raise BusUnavailable("the bus is closed")
        async with self._slots:
            if not self.available:
                raise BusUnavailable("Redis is unreachable (this process is reconnecting)")
            try:
                async with asyncio.timeout(2 * self.timeout):  # (the socket timeout ends it sooner)
                    return await call()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
                self.available = False
                raise BusUnavailable(f"Redis is unreachable: {exc}") from exc
            except redis.exceptions.ResponseError as exc:  # Redis is there, but refused (e.g. a key of another type)
                self._log_once(f"redis refused {what}".encode(), f"bus: Redis refused {what}: {exc}")
                raise BusUnavailable(f"Redis refused {what}: {exc}") from exc

    async def _call(self, name: str, room: str, *args: Any) -> Any:
        return await self._command(f"{name} in room {room!r}", lambda: self._scripts[name](keys=self._keys(room), args=list(args)))

    def _log_once(self, key: bytes, line: str) -> bool:
        """Log ``line`` (escaped) unless ``key`` was logged already (the latest 4096 are remembered)."""
        digest = hashlib.blake2b(key, digest_size=16).digest()
        if digest in self._logged:
            return False
        self._logged[digest] = None
        if len(self._logged) > 4096:
            self._logged.popitem(last=False)
        self.log(visible(line))
        return True

    def _skip(self, what: str, raw: object, error: Exception) -> None:
        """Count and log (once, escaped) a bad entry that was skipped."""
        key = what.encode("utf-8", "surrogatepass") + b"\0" + (raw if isinstance(raw, bytes) else repr(raw).encode("utf-8", "surrogatepass"))
        if self._log_once(key, f"bus: skipped {what}: {error}: {_preview(raw)}"):
            self.skipped += 1

    # -- rooms -------------------------------------------------------------------------------------

    def watch(self, room: str, after: EventId) -> None:
        if room not in self.positions:
            super().watch(room, after)
            task = asyncio.create_task(self._wake())
            self._wakes.add(task)
            task.add_done_callback(self._wakes.discard)

    def unwatch(self, room: str) -> None:
        super().unwatch(room)
        self._broken.discard(room)
        self._seqs.pop(room, None)

    async def _wake(self) -> None:
        with contextlib.suppress(BusUnavailable):
            await self._command("wake", lambda: self.redis.xadd(self._control, {"w": "1"}, maxlen=10, approximate=True))

    async def join(self, room: str, key: str, nick: str) -> Joined | None:
        for owed in [o for o in self._owed if o[:2] == (room, key)]:  # our own earlier claim of this key
            await self.leave(*owed)
        head = json.dumps({"type": "presence", "event": "join", "nick": nick}, ensure_ascii=False)[:-1] + ', "count": '
        try:
            answer = await self._call("join", room, key, self._owner(nick), head, self.stream_length, room)
        except BusUnavailable:  # it may have been applied (a paused Redis answers late; a script may fail halfway)
            with contextlib.suppress(BusUnavailable):
                await self.leave(room, key, nick)
            raise
        if not answer:
            return None
        raw_id, owners, history, raw_seq = answer
        if room not in self.positions:  # the reader starts after this join: the next message is raw_seq + 1
            self._seqs[room] = int(raw_seq) if raw_seq and raw_seq.isdigit() else 0
        members = []
        for raw in owners:
            try:
                members.append(decode_owner(raw)[1])
            except BadEntry as error:
                self._skip(f"a member of room {room!r}", raw, error)
        entries = []
        for raw in history:
            try:
                entries.append(decode_event(raw, history=True))
            except BadEntry as error:
                self._skip(f"a history entry of room {room!r}", raw, error)
        return Joined(_parse_id(raw_id), sorted(members), entries)

    async def say(self, room: str, nick: str, text: str) -> None:
        rest = json.dumps({"nick": nick, "text": text}, ensure_ascii=False)[1:]  # '"nick": ..., "text": ...}'
        try:
            await self._call("say", room, rest, self.stream_length, self.history)
        except BusUnavailable:
            self.refused += 1
            raise

    async def leave(self, room: str, key: str, nick: str) -> None:
        """Release ``nick``; if Redis cannot be reached, it is released as soon as Redis answers again."""
        try:
            await self._release(room, key, self._owner(nick), nick)
        except BusUnavailable:
            self._owed.add((room, key, nick))
            raise
        self._owed.discard((room, key, nick))

    async def _settle(self) -> None:
        """Release the members whose leave Redis missed (unless they joined here again meanwhile)."""
        here = {(room, key) for room, key, _ in self._members()}
        for owed in list(self._owed):
            if owed[:2] in here:
                self._owed.discard(owed)
            else:
                await self.leave(*owed)

    async def _release(self, room: str, key: str, owner: str, nick: str) -> bool:
        head = json.dumps({"type": "presence", "event": "leave", "nick": nick}, ensure_ascii=False)[:-1] + ', "count": '
        return bool(await self._call("leave", room, key, owner, head, self.stream_length, room))

    async def events(self, room: str, after: EventId, until: EventId) -> list[tuple[EventId, dict[str, Any]]]:
        stream = self._keys(room)[1]
        entries = await self._command(f"catch-up in room {room!r}", lambda: self.redis.xrange(stream, f"({_format_id(after)}", _format_id(until)))
        found = []
        for raw_id, fields in entries:
            event = self._event(room, _parse_id(raw_id), fields)
            if event is not None:
                found.append((_parse_id(raw_id), event))
        return found

    def _event(self, room: str, event_id: EventId, fields: dict[bytes, bytes]) -> dict[str, Any] | None:
        raw = fields.get(b"e")
        try:
            return decode_event(raw)
        except BadEntry as error:
            self._skip(f"event {_format_id(event_id)} of room {room!r}", raw if isinstance(raw, bytes) else fields, error)
            return None

    # -- tasks: reading, beating, reaping ------------------------------------------------------------

    async def _read(self) -> None:
        """Deliver the watched rooms' events, from the last id seen; reconnect with backoff when Redis goes."""
        import redis.exceptions

        delay, lost = 0.1, False
        while self._closing is None:
            rooms = {self._keys(room)[1]: room for room in self.positions if room not in self._broken}
            streams = {self._control: _format_id(self._control_id)}
            streams |= {stream: _format_id(self.positions[room]) for stream, room in rooms.items()}
            try:
                answer = await self.reader.xread(streams, count=1000, block=self.block)
            except redis.exceptions.ResponseError as exc:  # a stream key that holds something else
                if not await self._find_broken(rooms, exc):
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                continue
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
                if self._closing is not None:  # redis-py turns the cancelled XREAD into a ConnectionError
                    return
                self.available = False
                if not lost:
                    self.log(f"redis lost ({type(exc).__name__}): retrying with backoff")
                    self.reconnects += 1
                lost = True
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 2.0)
                continue
            self.available = True
            if lost:  # Redis is back (perhaps restarted, and empty): claim our members again
                lost, delay = False, 0.1
                await self._claim_again("redis is back")
            for stream, entries in answer or ():
                name = stream.decode("utf-8", "replace")
                for raw_id, fields in entries:
                    event_id = _parse_id(raw_id)
                    if name == self._control:
                        self._control_id = event_id
                    elif name in rooms:
                        self._hand_over(rooms[name], event_id, fields)

    def _hand_over(self, room: str, event_id: EventId, fields: dict[bytes, bytes]) -> None:
        """Deliver one event read from the room's stream, once; a bad one is skipped, nothing else stops."""
        if room not in self.positions or event_id <= self.positions[room]:
            return
        self.positions[room] = event_id
        event = self._event(room, event_id, fields)
        if event is None:
            return
        if event["type"] == "message":
            self._count_trimmed(room, event["seq"])
        try:
            self._deliver(room, event_id, event)
        except Exception as exc:  # a bug in the chat must not stop the other rooms' events
            self._log_once(f"deliver {type(exc).__name__}".encode(), f"bus: delivering an event of room {room!r} failed: {type(exc).__name__}: {exc}")

    def _count_trimmed(self, room: str, seq: int) -> None:
        """Count and log the messages a gap in the room's sequence numbers says were trimmed unread.

        Every message gets its number and its stream entry in one script, so a gap means the stream's
        ``MAXLEN`` dropped entries this process had not read: it fell more than ``stream_length`` behind (a
        long pause, Redis unreachable for long). A smaller number means a Redis that started again, empty.
        """
        last = self._seqs.get(room)
        self._seqs[room] = seq
        if last is not None and seq > last + 1:
            self.trimmed += seq - last - 1
            self.log(visible(f"bus: room {room!r}: {seq - last - 1} messages (seq {last + 1} to {seq - 1}) were trimmed "
                             "from its stream before this process read them: it fell further behind than the stream keeps (MAXLEN)"))

    async def _find_broken(self, rooms: dict[str, str], error: Exception) -> bool:
        """After XREAD was refused: stop reading each room whose stream key holds another type; any found?"""
        found = False
        for stream, room in rooms.items():
            with contextlib.suppress(BusUnavailable):
                kind = await self._command(f"the type of room {room!r}'s stream", lambda: self.redis.type(stream))
                if kind not in (b"stream", b"none"):
                    self._broken.add(room)
                    found = True
                    self._log_once(stream.encode(), f"bus: room {room!r}'s stream key holds a {kind.decode(errors='replace')}, not a stream: its events are not read")
        with contextlib.suppress(BusUnavailable):
            if await self._command("the type of the wake-up stream", lambda: self.redis.type(self._control)) not in (b"stream", b"none"):
                await self._command("resetting the wake-up stream", lambda: self.redis.delete(self._control))  # ours alone
                self._log_once(self._control.encode(), f"bus: {self._control} held another type: deleted")
                found = True
        if not found:
            self._log_once(str(error).encode(), f"bus: Redis refused XREAD: {error}")
        return found

    async def _claim_again(self, why: str) -> None:
        self.log(f"{why}: claiming this process's members again")
        with contextlib.suppress(BusUnavailable):
            await self._beat()
            await self._settle()
        for room, key, nick in list(self._members()):
            with contextlib.suppress(BusUnavailable):
                await self.join(room, key, nick)

    async def _beat(self) -> bool:
        """Renew this process's heartbeat; True if it had expired (while this process still lived)."""
        key = f"{self.prefix}:node:{self.node}"
        return await self._command("heartbeat", lambda: self.redis.set(key, os.getpid(), px=int(self.ttl * 1000), get=True)) is None

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            with contextlib.suppress(BusUnavailable):
                if await self._beat() and self.available:  # others may have removed our members meanwhile
                    await self._claim_again("heartbeat had expired")
                if self._owed:
                    await self._settle()

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 2)
            with contextlib.suppress(BusUnavailable):
                await self.reap()

    async def reap(self) -> int:
        """Remove the members of processes whose heartbeat expired; return how many this call removed."""
        removed = 0
        for raw_room in await self._command("reap", lambda: self.redis.smembers(f"{self.prefix}:rooms")):
            try:
                room = raw_room.decode("utf-8")
            except UnicodeDecodeError as exc:
                self._skip("a room name", raw_room, BadEntry(f"not UTF-8 text ({exc.reason})"))
                continue
            members = self._keys(room)[0]
            owners = await self._command(f"reap in room {room!r}", lambda: self.redis.hgetall(members))
            alive: dict[str, bool] = {}
            for raw_key, raw_owner in owners.items():
                try:
                    node, nick = decode_owner(raw_owner)
                    key, owner = raw_key.decode("utf-8"), raw_owner.decode("utf-8")
                except BadEntry as error:  # (the same words as a join that reads it)
                    self._skip(f"a member of room {room!r}", raw_owner, error)
                    continue
                except UnicodeDecodeError as exc:
                    self._skip(f"a member key of room {room!r}", raw_key, BadEntry(f"not UTF-8 text ({exc.reason})"))
                    continue
                if node not in alive:
                    beat = f"{self.prefix}:node:{node}"
                    alive[node] = bool(await self._command("reap", lambda: self.redis.exists(beat)))
                if not alive[node] and await self._release(room, key, owner, nick):
                    removed += 1
        self.reaped += removed
        return removed


_CONNECTIONS = 16  # Redis connections per bus for commands (plus one for XREAD)
