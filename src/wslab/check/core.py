"""The machinery every check shares: run a check's body, bounded, and print its verdict.

A chapter's check is ``async def name(solution) -> Verdict`` whose ``body(run: Run) -> str`` starts servers
with ``run.start(...)``, raises :class:`Fail` with a hint when something is wrong, and returns a one-line summary;
``await run(name, body)`` does the time limit, the cleanup and the printing.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed

from ..errors import LegacyHandlerError
from ..servers import BackgroundServer, start

__all__ = ["STEP", "TIMEOUT", "Fail", "Run", "Verdict", "recv", "require_coroutine_function", "run"]

TIMEOUT = 5.0  # the most any one check may take, in seconds
STEP = 1.0  # the most one expected message may take


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

    async def start(self, handler: Any, port: int = 0, suffix: str = "", **kwargs: Any) -> BackgroundServer:
        """Start ``handler`` on a server named ``check-<name>``, stopped when the check ends.

        Servers side by side in one check need a ``suffix`` each (``check-<name>-<suffix>``).
        """
        kwargs.setdefault("close_timeout", 1)
        name = f"check-{self.name}-{suffix}" if suffix else f"check-{self.name}"
        server = await start(handler, name=name, port=port, **kwargs)
        self.servers.append(server)
        return server

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


async def run(name: str, body: Callable[[Run], Awaitable[str]], timeout: float = TIMEOUT) -> Verdict:
    """Run one check's body, bounded, and turn whatever happens into a printed verdict."""
    state = Run(name)
    lines: list[str] = []
    passed = False
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
    finally:
        await state.stop()
    errors = state.handler_errors()
    if passed and errors:  # the answers were right, but the handler crashed on the way: not a pass
        passed = False
        lines = [
            "got: the right answers, but your handler raised an error during the check",
            "hint: a handler must end cleanly; read with `async for message in websocket` (it ends quietly "
            "when the client closes) or catch websockets.exceptions.ConnectionClosed",
        ]
    if passed:
        text = f"PASS: {name} - {summary}"
    else:
        if errors:
            lines.insert(0, "server: " + "; ".join(dict.fromkeys(e.split(": ", 1)[1] for e in errors)))
        text = "\n".join([f"FAIL: {name}"] + [f"  {line}" for line in lines])
    print(text)
    return Verdict(name, passed, text)


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
