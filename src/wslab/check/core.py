"""The machinery every check shares: run a check's body, bounded, and print its verdict.

A chapter's check is ``async def name(solution) -> Verdict`` whose ``body(run: Run) -> str`` starts servers
with ``run.start(...)``, raises :class:`Fail` with a hint when something is wrong, and returns a one-line summary;
``await run(name, body)`` does the time limit, the cleanup and the printing.

Whatever the verdict, two causes that are not in the learner's logic are named when they explain a failure:
an event loop blocked for a second or more (a ``time.sleep`` in a handler), and a proxy from the environment
that took the learner's client away from the check's server. The check's own clients use
:func:`~wslab.chat.client.loopback_connect`, so they never go through a proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidProxy, ProxyError
from websockets.proxy import get_proxy
from websockets.uri import parse_uri

from ..chat.client import loopback_connect
from ..errors import LegacyHandlerError
from ..servers import BackgroundServer, start

__all__ = [
    "BLOCKED",
    "STEP",
    "TIMEOUT",
    "Fail",
    "Run",
    "Verdict",
    "loopback_connect",
    "recv",
    "require_coroutine_function",
    "run",
]

TIMEOUT = 5.0  # the most any one check may take, in seconds
STEP = 1.0  # the most one expected message may take
BLOCKED = 1.0  # a loop blocked this long explains a failure (the loop is never late by that much otherwise)
TICK = 0.05  # how often the loop's watcher wakes up, in seconds


@dataclass
class Verdict:
    """The result of a check: ``passed`` and the text it printed. Shows nothing more in a notebook."""

    exercise: str
    passed: bool
    text: str

    def __bool__(self) -> bool:
        return self.passed

    def _ipython_display_(self) -> None:  # the printed verdict is enough
        pass


_UNSET: Any = object()


class Fail(Exception):
    """Raised inside a check to end it with a FAIL verdict."""

    def __init__(self, hint: str, *, sent: Any = _UNSET, got: Any = _UNSET, expected: Any = _UNSET) -> None:
        super().__init__(hint)
        self.lines = [f"{k}: {v}" for k, v in (("sent", sent), ("got", got), ("expected", expected)) if v is not _UNSET]
        self.lines.append(f"hint: {hint}")


@dataclass
class Run:
    """What one check started, so that it is stopped whatever happens."""

    name: str
    servers: list[BackgroundServer] = field(default_factory=list)
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    for_learner: list[BackgroundServer] = field(default_factory=list)  # servers the learner's client connects to

    async def start(
        self, handler: Any, port: int = 0, suffix: str = "", *, learner_connects: bool = False, **kwargs: Any
    ) -> BackgroundServer:
        """Start ``handler`` on a server named ``check-<name>``, stopped when the check ends.

        Servers side by side in one check need a ``suffix`` each (``check-<name>-<suffix>``). With
        ``learner_connects=True`` the learner's own client connects to it: if that client never arrives while
        the environment names a proxy, the verdict says so.
        """
        kwargs.setdefault("close_timeout", 1)
        name = f"check-{self.name}-{suffix}" if suffix else f"check-{self.name}"
        server = await start(handler, name=name, port=port, **kwargs)
        self.servers.append(server)
        if learner_connects:
            self.for_learner.append(server)
        return server

    def proxy_in_the_way(self) -> str | None:
        """The proxy that ``connect()`` chose for a server the learner's client never reached, if any."""
        for server in self.for_learner:
            proxy = get_proxy(parse_uri(server.uri))  # what connect() itself asks, with its default proxy=True
            if proxy is not None and not any(": connected to " in line for line in server.transcript.lines):
                return proxy
        return None

    def handler_errors(self) -> list[str]:
        """The "connection handler failed" lines of every server this check started."""
        return [line for s in self.servers for line in s.transcript.lines if "connection handler failed" in line]

    async def stop(self) -> None:
        """Run the cleanups, then stop the servers, never raising."""
        for cleanup in self.cleanups:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await cleanup()
        for server in self.servers:
            try:
                async with asyncio.timeout(3):
                    await server.stop(close_timeout=0.5)
            except Exception:
                server._stop_soon(0)


class _LoopWatch:
    """A task that wakes up every TICK seconds: how late it wakes is how long the loop was blocked."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.worst = 0.0
        self.task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            now = self.loop.time()
            self.worst = max(self.worst, now - self.last - TICK)
            self.last = now

    def stop(self) -> float:
        """Stop watching; the longest the loop was blocked, in seconds (a block just ended counts too)."""
        self.task.cancel()
        return max(self.worst, self.loop.time() - self.last - TICK)


async def run(name: str, body: Callable[[Run], Awaitable[str]], timeout: float = TIMEOUT) -> Verdict:
    """Run one check's body, bounded, and turn whatever happens into a printed verdict."""
    state = Run(name)
    lines: list[str] = []
    passed = False
    unreached = True  # whether the failure may be a client that never reached the check's server
    raised: Exception | None = None  # what the learner's code raised, if anything
    watch = _LoopWatch()
    try:
        async with asyncio.timeout(timeout):
            summary = await body(state)
        passed = True
    except Fail as failure:
        lines = failure.lines
    except TimeoutError:
        lines = [f"hint: no result within {timeout:g} s: is something waiting forever (a recv() nobody answers)?"]
    except LegacyHandlerError as error:
        lines = [f"hint: {error}"]
    except ConnectionClosed as error:
        lines = [
            f"got: the connection closed: {error}",
            "hint: the server ended the connection before answering: does the handler return (or fail) too early?",
        ]
    except Exception as error:  # the learner's code raised: report it, never crash the kernel
        lines = [f"got: {type(error).__name__}: {error}", "hint: your code raised this exception; fix it and run again"]
        unreached, raised = isinstance(error, (OSError, InvalidHandshake, InvalidProxy, ImportError)), error
    finally:
        await state.stop()
        blocked = watch.stop()
    errors = state.handler_errors()
    if passed and errors:  # the answers were right, but the handler crashed on the way: not a pass
        passed = False
        lines = [
            "got: the right answers, but your handler raised an error during the check",
            "hint: a handler must end cleanly; read with `async for message in websocket` (it ends quietly "
            "when the client closes) or catch websockets.exceptions.ConnectionClosed",
        ]
    if not passed:
        proxy = state.proxy_in_the_way() if unreached else None
        if proxy is not None and raised is not None and not _blames(raised, proxy):
            proxy = None  # a proxy is set, but the error is about something else (a wrong port, say)
        lines = _explained(lines, blocked, proxy)
    if passed:
        text = f"PASS: {name} - {summary}"
    else:
        if blocked >= BLOCKED:  # the check gave up meanwhile: a handler that then found it gone made no second mistake
            errors = [e for e in errors if "ConnectionClosed" not in e]
        if errors:
            lines.insert(0, "server: " + "; ".join(dict.fromkeys(e.split(": ", 1)[1] for e in errors)))
        text = "\n".join([f"FAIL: {name}"] + [f"  {line}" for line in lines])
    print(text)
    return Verdict(name, passed, text)


def _blames(error: Exception, proxy: str) -> bool:
    """Whether the learner's exception shows that ``connect()`` went to ``proxy``: an answer from a proxy,
    a failure to reach the proxy's own address or name, or python-socks missing for a SOCKS proxy."""
    if isinstance(error, (InvalidProxy, ProxyError)):
        return True
    if isinstance(error, ImportError):
        return "SOCKS" in str(error)
    host, port = urllib.parse.urlsplit(proxy).hostname, urllib.parse.urlsplit(proxy).port
    if host is None:
        return False
    if isinstance(error, socket.gaierror):  # the check's servers are at 127.0.0.1: only the proxy has a name
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(host)
            return False
        return True
    if isinstance(error, OSError):  # e.g. "Connect call failed ('127.0.0.1', 9)": the proxy's address
        text = str(error)
        return (f"'{host}', {port})" in text or f"{host}:{port}" in text) if port is not None else host in text
    return False


def _explained(lines: list[str], blocked: float, proxy: str | None) -> list[str]:
    """The verdict's lines, with the hint replaced when a blocked loop or a proxy explains the failure."""
    if blocked >= BLOCKED:
        hint = (
            f"the event loop was blocked for {blocked:.1f} s: a time.sleep or other blocking call in your code; "
            "use await asyncio.sleep or asyncio.to_thread (chapter 00)"
        )
    elif proxy is not None:
        hint = (
            f"your client never reached the check's server: connect() went to the proxy that the environment "
            f"names ({proxy}: http_proxy, https_proxy, ws_proxy or socks_proxy); pass proxy=None to connect() for a server on "
            "this machine (chapter 03, \"A proxy in the environment\")"
        )
    else:
        return lines
    return [line for line in lines if not line.startswith("hint: ")] + [f"hint: {hint}"]


def require_coroutine_function(fn: Any, what: str, example: str) -> None:
    """FAIL unless ``fn`` was defined with ``async def``."""
    if not inspect.iscoroutinefunction(fn):
        raise Fail(f"pass {what}, defined with `async def {example}:` (got {type(fn).__name__})")


async def recv(ws: Any, who: str, sent: Any, expected: Any, hint: str) -> Any:
    """One message, or a FAIL that says what was sent and what was expected."""
    try:
        async with asyncio.timeout(STEP):
            return await ws.recv()
    except TimeoutError:
        raise Fail(hint, sent=sent, got=f"{who} got nothing in {STEP:g} s", expected=expected) from None
    except ConnectionClosed as closed:
        raise Fail(hint, sent=sent, got=f"{who}'s connection closed: {closed}", expected=expected) from None
