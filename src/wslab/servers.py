"""Background WebSocket servers on the running event loop: start, replace on re-run, stop."""

from __future__ import annotations

import asyncio
import atexit
import errno
import inspect
import logging
import re
import threading
from typing import Any, Awaitable, Callable, Generator, Protocol

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.frames import Close
from websockets.http11 import Request, Response
from websockets.protocol import State

from .errors import NoEventLoopError, PortInUseError, check_handler
from .transcript import Transcript, TranscriptLogHandler, bind

__all__ = ["BackgroundServer", "NameTakenError", "start", "stop_all", "running"]

Handler = Callable[[ServerConnection], Awaitable[Any]]


class _Stoppable(Protocol):
    name: str
    port: int
    kind: str  # what it is, for messages: two things of different kinds never replace each other

    async def stop(self) -> None: ...

    def _stop_soon(self, close_timeout: float | None = None) -> None: ...


# Every server wslab started and has not stopped yet, by name. Lives on the module,
# so it survives re-running notebook cells.
_registry: dict[str, _Stoppable] = {}
# Stop tasks scheduled without an awaiting caller; kept so that they are not garbage-collected.
_background: set[asyncio.Future[Any]] = set()


class NameTakenError(ValueError):
    """The name is already used by something of another kind (e.g. a chat process and an in-process chat)."""


def _previous(name: str, kind: str) -> _Stoppable | None:
    """What runs under ``name`` now, which the caller replaces; NameTakenError if it is of another kind.

    Re-running a cell replaces a server of the same kind (the point of names); a different kind under the same
    name is a collision, and replacing it would silently stop something the learner still uses.
    """
    previous = _registry.get(name)
    if previous is not None and getattr(previous, "kind", type(previous).__name__) != kind:
        raise NameTakenError(
            f"the name {name!r} is taken by {getattr(previous, 'kind', type(previous).__name__)}, which is still "
            f"running; starting {kind} under the same name would stop it. Give the new one another name "
            f"(name={name + '-2'!r}, say), or stop the other first (`await wslab.stop_all()` stops everything)."
        )
    return previous


class BackgroundServer:
    """A websockets server running as tasks on an event loop, with a transcript.

    Get one with ``server = await wslab.start(handler)``; see :func:`start`.
    """

    kind = "a WebSocket server of this process (wslab.start or start_in_thread)"

    def __init__(self, name: str, handler: Handler) -> None:
        self.name = name
        self.transcript = Transcript()
        self.server: Server  # the websockets Server, set by _listen()
        self.host = ""
        self.port = 0
        self.uri = ""
        self._handler = handler
        self._loop = asyncio.get_running_loop()
        self._count = 0
        self._labels: dict[ServerConnection, str] = {}
        self._finished: dict[ServerConnection, asyncio.Future[None]] = {}
        self._dropped: set[ServerConnection] = set()  # TCP closed by the handler before any close frame
        # Every TCP connection not yet lost, even one still in its opening handshake (websockets lists only
        # the open ones), so that stop() can end each: asyncio has no list of them before 3.13.
        self._tcp: set[ServerConnection] = set()
        self._logger_name = ""  # the logger that feeds this server's transcript, if wslab made it
        # Called (without arguments, synchronously) as stop() begins, before any close frame: e.g. to tell
        # every client why in a message of the application's protocol.
        self.before_stop: list[Callable[[], None]] = []
        # Awaited in order once the server has stopped (every connection ended): e.g. to close what the
        # handlers used, such as a chat's message bus. Each should bound itself; AFTER_STOP is the last resort.
        self.after_stop: list[Callable[[], Awaitable[None]]] = []
        self._stopped: asyncio.Future[None] | None = None
        self._close_timeout: float = 10.0  # websockets' default; start() may set another

    async def _listen(self, host: str, port: int, serve_kwargs: dict[str, Any]) -> None:
        if serve_kwargs.get("close_timeout") is not None:
            self._close_timeout = serve_kwargs["close_timeout"]
        if "logger" not in serve_kwargs:
            serve_kwargs["logger"] = self._take_logger()
        serve_kwargs["process_response"] = self._recording_http(serve_kwargs.get("process_response"))
        serve_kwargs["create_connection"] = self._tracking(serve_kwargs.get("create_connection") or ServerConnection)
        try:
            self.server = await serve(self._handle, host, port, **serve_kwargs)
        except OSError as exc:
            self._release_logger()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(exc.errno, _port_in_use_message(host, port)) from None
            raise
        except BaseException:
            self._release_logger()
            raise
        self.host, self.port = host, self.server.sockets[0].getsockname()[1]
        scheme = "wss" if serve_kwargs.get("ssl") else "ws"
        shown_host = f"[{host}]" if ":" in host else host
        self.uri = f"{scheme}://{shown_host}:{self.port}"

    def _take_logger(self) -> logging.Logger:
        """A logger under ``websockets.server`` that feeds this server's transcript and no other's.

        It is named after the server (``websockets.server.wslab.echo``); while another live server uses that
        logger (``"echo 1"`` and ``"echo_1"`` give the same name), this one gets ``...echo_1-2``.
        """
        base = "websockets.server.wslab." + re.sub(r"\W", "_", self.name)
        with _logger_lock:
            self._logger_name, number = base, 1
            while self._logger_name in _logger_users:
                number += 1
                self._logger_name = f"{base}-{number}"
            _logger_users[self._logger_name] = self
        logger = logging.getLogger(self._logger_name)
        for old in [h for h in logger.handlers if isinstance(h, TranscriptLogHandler)]:
            logger.removeHandler(old)
        logger.addHandler(TranscriptLogHandler(self.transcript))
        return logger

    def _release_logger(self) -> None:
        """Detach this server's transcript from its logger, and free the logger's name for the next server."""
        with _logger_lock:
            if not self._logger_name or _logger_users.get(self._logger_name) is not self:
                return
            del _logger_users[self._logger_name]
        logger = logging.getLogger(self._logger_name)
        for old in [h for h in logger.handlers if isinstance(h, TranscriptLogHandler) and h.transcript is self.transcript]:
            logger.removeHandler(old)

    def _tracking(self, factory: Callable[..., ServerConnection]) -> Callable[..., ServerConnection]:
        """Wrap websockets' connection factory so that every TCP connection is in ``_tcp`` until it is lost."""

        def create(*args: Any, **kwargs: Any) -> ServerConnection:
            self._tcp = {c for c in self._tcp if not c.connection_lost_waiter.done()}
            connection = factory(*args, **kwargs)
            self._tcp.add(connection)
            return connection

        return create

    def _recording_http(self, process_response: Any) -> Callable[..., Awaitable[Response | None]]:
        """Wrap ``process_response`` so that every answer other than 101 is written to the transcript."""

        async def record(connection: ServerConnection, request: Request, response: Response) -> Response | None:
            replaced = process_response(connection, request, response) if process_response else None
            if inspect.isawaitable(replaced):
                replaced = await replaced
            final = replaced or response
            if final.status_code != 101:
                why = connection.protocol.handshake_exc
                self.transcript.add(
                    f"HTTP {request.path} -> {final.status_code} {final.reason_phrase}" + (f" ({why})" if why else "")
                )
            return replaced

        return record

    async def _handle(self, connection: ServerConnection) -> None:
        self._count += 1
        label = f"client {self._count}"
        self._labels[connection] = label
        finished = self._loop.create_future()
        self._finished[connection] = finished
        bind(self.transcript, label)  # this task's prints and errors go to the transcript
        self.transcript.add(f"{label}: connected to {connection.request.path}")
        task = asyncio.current_task()
        assert task is not None
        task.add_done_callback(lambda _: self._record_close(connection, label, finished))
        try:
            await self._handler(connection)
        finally:
            if connection.protocol.close_sent is None and connection.transport.is_closing():
                self._dropped.add(connection)  # the handler ended the TCP connection without a close frame

    def _record_close(self, connection: ServerConnection, label: str, finished: asyncio.Future[None]) -> None:
        received, sent = connection.protocol.close_rcvd, connection.protocol.close_sent
        dropped = connection in self._dropped
        self._dropped.discard(connection)
        if received is not None:
            how = str(received)
            if sent is not None and not connection.protocol.close_rcvd_then_sent and sent.code != received.code:
                how += f", answering the server's {sent}"  # aiohttp, for one, answers a 1001 with 1000
        elif sent is not None and not dropped:
            how = f"by the server with {sent}; no close frame received"
        else:
            how = str(Close(1006, ""))  # the TCP connection ended without any close frame
        self.transcript.add(f"{label}: closed {how}")
        self._finished.pop(connection, None)
        self._labels.pop(connection, None)
        finished.set_result(None)

    @property
    def connections(self) -> set[ServerConnection]:
        """The open connections (handshake done, not closing)."""
        return self.server.connections

    def label(self, connection: ServerConnection) -> str:
        """The transcript's name for a live connection, such as ``'client 1'``."""
        return self._labels[connection]

    async def settle(self, timeout: float = 2.0) -> None:
        """Wait (at most ``timeout`` s) until every connection that is closing has finished."""
        await asyncio.sleep(0)
        closing = [f for c, f in self._finished.items() if c.state is not State.OPEN]
        if closing:
            await asyncio.wait(closing, timeout=timeout)

    async def wait_idle(self, timeout: float = 2.0) -> None:
        """Wait until no client is connected, even one that vanished; TimeoutError after ``timeout`` s."""
        async with asyncio.timeout(timeout):
            while self._finished:
                await asyncio.wait(list(self._finished.values()))

    async def show(self, everything: bool = False) -> None:
        """Print what the server saw since the last ``show()``, once closing connections are done."""
        await self.settle()
        self.transcript.show(everything)

    async def stop(self, close_timeout: float | None = None) -> None:
        """Close every connection with 1001 (going away) and stop listening; never hangs. Idempotent.

        ``close_timeout`` (default: the one given to ``start()``, else websockets' 10 s) bounds the whole
        stop. websockets waits for each client to answer the close frame *and* for its TCP connection to
        end; a client that stopped reading (its unsent data fills the write buffer), or that answers but
        keeps its socket open, would hold that wait for ever. When ``close_timeout`` has passed, ``stop()``
        aborts the TCP connections that are left (the transcript says why, e.g. ``client 3: aborted after
        1.0 s (not reading, 16 MB unsent)``), then cancels handlers that still have not returned, so it
        returns within ``close_timeout`` plus about half a second.
        """
        if self._stopped is None:
            self._stopped = self._loop.create_future()
            timeout = close_timeout if close_timeout is not None else self._close_timeout
            for connection in self.server.all_connections:
                connection.close_timeout = timeout
            started = self._loop.time()
            try:
                for announce in self.before_stop:
                    try:
                        announce()
                    except Exception as exc:  # a failing announcement must not keep the server running
                        self.transcript.add(f"before_stop callback failed: {type(exc).__name__}: {exc}")
                self.server.close(close_connections=True)
                closing = self.server.close_task  # websockets' own shutdown: close frames, TCP, handlers
                assert closing is not None
                if not await _within(closing, timeout):
                    self._abort_the_rest(self._loop.time() - started)
                    if not await _within(closing, _GRACE):
                        self._cancel_handlers()
                        await _within(closing, _GRACE)
                if self._finished:
                    await asyncio.wait(list(self._finished.values()), timeout=_GRACE)
                for finish in self.after_stop:
                    try:
                        async with asyncio.timeout(AFTER_STOP):
                            await finish()
                    except Exception as exc:  # one failing cleanup must not skip the others
                        self.transcript.add(f"after_stop callback failed: {type(exc).__name__}: {exc}")
            finally:
                self._tcp.clear()
                self._release_logger()
                _unregister(self)
                self._stopped.set_result(None)
        else:
            await asyncio.shield(self._stopped)

    def _abort_the_rest(self, waited: float) -> None:
        """Abort every TCP connection that did not end in time, saying why in the transcript.

        That includes connections still in their opening handshake: 3.12's ``asyncio.Server.wait_closed()``
        waits for them (a stop would hang), and 3.11 leaves them open (the client never learns). A connection
        still in its TLS handshake has no connection object yet: only 3.13's ``abort_clients()`` reaches it
        (before 3.13 it ends at ``ssl_handshake_timeout``; the stop is bounded all the same).
        """
        for connection in self._live_tcp():
            label = self._labels.get(connection)
            if label is None:
                self.transcript.add(f"a connection in its opening handshake: aborted after {waited:.1f} s")
            else:
                self.transcript.add(f"{label}: aborted after {waited:.1f} s ({_why_stuck(connection)})")
            connection.transport.abort()
        abort_clients = getattr(self.server.server, "abort_clients", None)
        if abort_clients is not None:
            abort_clients()

    def _live_tcp(self) -> list[ServerConnection]:
        """The TCP connections not lost yet (a copy: another thread may read it while the loop adds to it)."""
        return [c for c in self._tcp.copy() if not c.connection_lost_waiter.done() and getattr(c, "transport", None)]

    def _cancel_handlers(self) -> None:
        """Cancel handlers that ignore their closed connection (e.g. stuck in a sleep), saying so."""
        for task in list(self.server.handler_tasks):
            if not task.done():
                task.cancel()
                self.transcript.add("a handler was cancelled: it did not return after its connection closed")

    def _stop_soon(self, close_timeout: float | None = None) -> None:
        """Start stopping from synchronous code: free the port now, finish the rest on the loop."""
        loop = self._loop
        if loop.is_closed():  # its loop is gone (e.g. asyncio.run ended): release the listening sockets
            for sock in getattr(self.server.server, "_sockets", None) or ():
                sock.close()
            self._release_logger()
            _unregister(self)
        elif loop.is_running():
            if _in_loop_thread(loop):
                self.server.server.close()  # closes the listening sockets at once: the port is free
                task = loop.create_task(self.stop(close_timeout))
                _background.add(task)
                task.add_done_callback(_background.discard)
            else:
                asyncio.run_coroutine_threadsafe(self.stop(close_timeout), loop)
        else:  # a loop that is not running now (at exit, say): run it until the stop is done
            stopping = loop.create_task(self.stop(close_timeout))
            for _ in range(_RUNS):
                try:
                    loop.run_until_complete(stopping)
                except RuntimeError:  # "Event loop stopped before Future completed": a stale loop.stop() ran
                    if stopping.done():
                        raise
                else:
                    return

    async def __aenter__(self) -> BackgroundServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else f"{len(self._labels)} connection(s)"
        return f"<{type(self).__name__} {self.name!r} at {self.uri}, {state}>"


class _Starting:
    """What ``start()`` returns: await it (or use ``async with``) to get the running server."""

    def __init__(self, factory: Callable[[], Awaitable[Any]], call: str) -> None:
        self._factory = factory
        self._call = call
        self._server: Any = None

    def __await__(self) -> Generator[Any, None, Any]:
        return self._factory().__await__()

    async def __aenter__(self) -> Any:
        self._server = await self
        return self._server

    async def __aexit__(self, *exc_info: object) -> None:
        await self._server.stop()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if not _loop_is_running():
            raise NoEventLoopError(
                f"wslab.start() must be awaited, and no event loop runs here. In a notebook cell write "
                f"`server = await {self._call}`. In a script, await it inside `async def main(): ...` "
                "run with `asyncio.run(main())`, or use `wslab.start_in_thread(...)`, which needs no loop."
            )
        raise AttributeError(
            f"the server is not started yet: write `server = await {self._call}` and then use server.{name}"
        )

    def __repr__(self) -> str:
        return f"<not started yet: write `server = await {self._call}`>"


def start(
    handler: Handler,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    **serve_kwargs: Any,
) -> _Starting:
    """Start ``handler`` as a background server on the running loop; await the result.

    Await the result (it returns once the server listens), or use ``async with``. ``port=0`` (the default) lets the system pick a
    free port: read it from ``server.port`` or ``server.uri``. Starting another
    server with the same ``name`` (default: the handler's name) replaces the old one,
    so re-running a notebook cell never leaks a server. Extra keyword arguments go to
    ``websockets.asyncio.server.serve`` (``max_size=``, ``origins=``, ``ssl=``, ...).
    ``close_timeout=`` (websockets' default 10 s) is how long a client gets, at ``stop()``, to answer the close
    frame and end its TCP connection; ``stop()`` aborts the connections still open after it.

    >>> server = await start(echo)          # doctest: +SKIP
    >>> server.uri                          # doctest: +SKIP
    'ws://127.0.0.1:54321'
    """
    check_handler(handler)
    server_name = name or _default_name(handler)

    async def create() -> BackgroundServer:
        previous = _previous(server_name, BackgroundServer.kind)
        if previous is not None:
            await previous.stop()
        server = BackgroundServer(server_name, handler)
        await server._listen(host, port, dict(serve_kwargs))
        _registry[server_name] = server
        return server

    return _Starting(create, f"wslab.start({server_name}, ...)")


async def stop_all() -> list[str]:
    """Stop every server wslab started (both modes); return their names."""
    servers = list(_registry.values())
    for server in servers:
        if isinstance(server, BackgroundServer) and server._loop is not asyncio.get_running_loop():
            server._stop_soon()  # a server left on another loop: stop it where it lives
        else:
            await server.stop()
    return [server.name for server in servers]


def running() -> dict[str, str]:
    """The servers wslab is running, as ``{name: uri}``."""
    return {name: getattr(server, "uri", "") for name, server in _registry.items()}


AFTER_STOP = 5.0  # the most one after_stop callback may take, in seconds
_GRACE = 0.25  # after aborting: how long connections and handlers get to finish, each step
# How often _stop_soon() runs a stopped loop again when a run ends early. A Jupyter kernel that shuts down
# leaves a loop.stop() call queued on its loop, which ended the first run at exit: clients got 1006, not 1001.
_RUNS = 3

# The loggers feeding a transcript, by name, and the live server each feeds (servers of two threads may start
# at once, hence the lock).
_logger_users: dict[str, BackgroundServer] = {}
_logger_lock = threading.Lock()


async def _within(task: asyncio.Future[Any], timeout: float) -> bool:
    """Wait at most ``timeout`` s for ``task``, which goes on if it is not done; True if it finished."""
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(task)
    except TimeoutError:
        return False
    return True


def _why_stuck(connection: ServerConnection) -> str:
    """Why a connection did not close in time, in a few words for the transcript."""
    unsent = connection.transport.get_write_buffer_size()
    if unsent > 1_000_000:
        return f"not reading, {unsent / 1e6:.0f} MB unsent"
    if unsent:
        return f"not reading, {unsent:,} bytes unsent"
    if connection.protocol.close_rcvd is not None:
        return "it answered the close frame but kept its TCP connection open"
    return "no answer to the close frame"


def _unregister(server: object) -> None:
    name = getattr(server, "name", None)
    if name is not None and _registry.get(name) is server:
        del _registry[name]


def _default_name(handler: Handler) -> str:
    return getattr(handler, "__name__", type(handler).__name__)


def _loop_is_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _in_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _port_in_use_message(host: str, port: int) -> str:
    holder = next((n for n, s in _registry.items() if s.port == port), None)
    hint = (
        f"wslab's server {holder!r} listens there: stop it with `await wslab.stop_all()`, or pass "
        f"name={holder!r} to replace it."
        if holder
        else "Another program or notebook holds it."
    )
    return (
        f"port {port} on {host} is already in use. {hint} Or use port=0 (the default) to let the "
        "system pick a free port, and read it from server.port or server.uri."
    )


@atexit.register
def _stop_at_exit() -> None:
    """Close whatever is still running when the interpreter exits, quietly."""
    for server in list(_registry.values()):
        try:
            server._stop_soon(close_timeout=1.0)
        except Exception:  # exiting anyway: never turn shutdown into a traceback
            pass
