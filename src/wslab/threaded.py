"""Thread mode: a background server on its own event loop in a daemon thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import socket
import threading
from typing import Any, Coroutine, TypeVar

from websockets.asyncio.server import ServerConnection

from .errors import check_handler
from .servers import _GRACE, BackgroundServer, Handler, _default_name, _previous, _registry, _unregister
from .transcript import Transcript

__all__ = ["ThreadedServer", "start_in_thread"]

T = TypeVar("T")

# How much longer than close_timeout a stop waits for the server's loop before ending the server from outside:
# BackgroundServer.stop() itself takes at most about three _GRACE steps more.
_MARGIN = 4 * _GRACE


class ThreadedServer:
    """A :class:`BackgroundServer` that runs in its own thread, so blocking code cannot stall it.

    Same attributes; ``stop()``, ``show()`` and ``settle()`` can be awaited from any loop,
    and ``stop_blocking()`` / ``show_blocking()`` work where no loop runs.
    """

    kind = BackgroundServer.kind

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"wslab-{name}", daemon=True)
        self._inner: BackgroundServer
        self._stopped = False

    def _run(self) -> None:
        """The thread: serve until told to stop, then close the loop (here, so that a late stop can finish)."""
        self._loop.run_forever()
        self._loop.close()

    def _open(self, handler: Handler, host: str, port: int, serve_kwargs: dict[str, Any], timeout: float) -> None:
        self._thread.start()

        async def create() -> BackgroundServer:
            server = BackgroundServer(self.name, handler)
            await server._listen(host, port, serve_kwargs)
            return server

        try:
            self._inner = self._call(create(), timeout)
        except BaseException:
            self._end_thread()
            raise

    # The same attributes as BackgroundServer.
    server = property(lambda self: self._inner.server, doc="The websockets Server.")
    host = property(lambda self: self._inner.host)
    port = property(lambda self: self._inner.port)
    uri = property(lambda self: self._inner.uri)
    transcript: Transcript = property(lambda self: self._inner.transcript)  # type: ignore[assignment]

    @property
    def connections(self) -> set[ServerConnection]:
        """The open connections (handshake done, not closing)."""
        return self._call(self._snapshot_connections(), 5)

    async def _snapshot_connections(self) -> set[ServerConnection]:
        return set(self._inner.connections)

    def label(self, connection: ServerConnection) -> str:
        """The transcript's name for a live connection, such as ``'client 1'``."""
        return self._inner.label(connection)

    async def settle(self, timeout: float = 2.0) -> None:
        """Wait until every connection that is closing has finished."""
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._inner.settle(timeout), self._loop))

    async def wait_idle(self, timeout: float = 2.0) -> None:
        """Wait until no client is connected."""
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._inner.wait_idle(timeout), self._loop))

    async def show(self, everything: bool = False) -> None:
        """Print what the server saw since the last ``show()``."""
        await self.settle()
        self.transcript.show(everything)

    def show_blocking(self, everything: bool = False) -> None:
        """``show()`` for code that cannot await."""
        self._call(self._inner.settle(), 5)
        self.transcript.show(everything)

    async def stop(self, close_timeout: float | None = None) -> None:
        """Close connections with 1001, stop listening, end the thread. Idempotent; bounded like
        :meth:`BackgroundServer.stop`: within ``close_timeout`` plus about half a second.

        Even when the server's loop is blocked (``time.sleep()`` in a handler, say): past ``close_timeout`` plus
        a second, the port is closed and the connections shut down from the calling thread (the transcript says
        so), and the server leaves ``wslab.running()``; its loop finishes the stop if it ever runs again.
        """
        if not self._stopped:
            stopping, bound = self._start_stop(close_timeout)
            if not await _finished(stopping, bound):
                self._end_from_outside(stopping, bound)
                return
            stopping.result()
        self._finish()

    def stop_blocking(self, close_timeout: float | None = None) -> None:
        """``stop()`` for code that cannot await (scripts, sync clients, interpreter exit); bounded the same way."""
        if not self._stopped:
            stopping, bound = self._start_stop(close_timeout)
            try:
                stopping.result(bound)
            except concurrent.futures.TimeoutError:
                self._end_from_outside(stopping, bound)
                return
        self._finish()

    _stop_soon = stop_blocking

    def _start_stop(self, close_timeout: float | None) -> tuple[concurrent.futures.Future[None], float]:
        """Ask the server's loop to stop the server; return that request and how long to wait for it."""
        timeout = close_timeout if close_timeout is not None else self._inner._close_timeout
        return asyncio.run_coroutine_threadsafe(self._inner.stop(close_timeout), self._loop), timeout + _MARGIN

    def _end_from_outside(self, stopping: concurrent.futures.Future[None], waited: float) -> None:
        """The loop did not run the stop in time: free the port and end every connection from this thread.

        A socket the loop watches must not be closed under it, so each listening socket's file descriptor is
        pointed at ``/dev/null`` instead (the port is free at once; the loop, blocked, is not closing it at the
        same instant, and closes that descriptor when it runs again), and each connection gets ``shutdown()``
        (its client sees the TCP connection end; the loop sees EOF). The transcript stays attached to the
        server's logger until that late stop is done, so what the handlers log meanwhile still lands there.
        """
        if self._stopped:
            return
        self._stopped = True
        inner = self._inner
        connections = inner._live_tcp()
        inner.transcript.add(
            f"the server's loop did not answer for {waited:.1f} s (blocked, e.g. by time.sleep() in a handler): "
            f"its port was closed and {len(connections)} connection(s) shut down from outside"
        )
        placeholder = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            for listening in inner.server.sockets:
                with contextlib.suppress(OSError):
                    os.dup2(placeholder, listening.fileno(), inheritable=False)
        finally:
            os.close(placeholder)
        for connection in connections:
            sock = connection.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        # Once the stop is done (if the loop ever runs again), end the loop and, with it, the thread.
        stopping.add_done_callback(lambda _: self._loop.call_soon_threadsafe(self._loop.stop))
        _unregister(self)

    def _finish(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._end_thread()
            _unregister(self)

    def _end_thread(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __enter__(self) -> ThreadedServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_blocking()

    async def __aenter__(self) -> ThreadedServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "running in a thread"
        return f"<ThreadedServer {self.name!r} at {self._inner.uri}, {state}>"


async def _finished(future: concurrent.futures.Future[Any], timeout: float) -> bool:
    """Wait at most ``timeout`` s for another thread's future; True if it is done.

    Not ``asyncio.wrap_future()``: a future done late would call back into this loop, which may be closed by then.
    """
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def wake(_: object) -> None:
        with contextlib.suppress(RuntimeError):  # this loop is closed: nobody waits any more
            loop.call_soon_threadsafe(done.set)

    future.add_done_callback(wake)
    try:
        async with asyncio.timeout(timeout):
            await done.wait()
    except TimeoutError:
        return False
    return True


def start_in_thread(
    handler: Handler,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = 10.0,
    **serve_kwargs: Any,
) -> ThreadedServer:
    """Start ``handler`` on its own loop in a daemon thread; return once it listens.

    Works with or without a running loop (no ``await``). Use it when a cell runs blocking
    code: the sync client, ``time.sleep``, or old-style ``run_until_complete``.

    >>> server = start_in_thread(echo)     # doctest: +SKIP
    >>> server.stop_blocking()             # doctest: +SKIP
    """
    check_handler(handler)
    server_name = name or _default_name(handler)
    previous = _previous(server_name, ThreadedServer.kind)
    if previous is not None:
        previous._stop_soon()
    server = ThreadedServer(server_name)
    server._open(handler, host, port, dict(serve_kwargs), timeout)
    _registry[server_name] = server
    return server

