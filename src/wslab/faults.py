"""Real faults on loopback, for chapters and tests: peers that stall, vanish, or never answer.

Each fault is an async context manager that cleans up everything it opened, on every Python:

>>> async with silent_server() as port:          # doctest: +SKIP
...     await wslab.http_get(f"http://127.0.0.1:{port}/", timeout=0.2)
Traceback (most recent call last):
TimeoutError
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import struct
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Sequence

__all__ = [
    "StalledClient",
    "abort_mid_message",
    "closing_server",
    "lingering_client",
    "paused_process",
    "proxy_in_environment",
    "silent_server",
    "stalled_client",
]


@contextlib.asynccontextmanager
async def _tcp_server(answer_and_close: bool) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 that never answers; with ``answer_and_close`` it closes at once."""
    writers: list[asyncio.StreamWriter] = []

    def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if answer_and_close:
            writer.close()
        else:
            writers.append(writer)  # keep it: a writer that is garbage-collected closes its socket (3.13)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()  # since 3.12, wait_closed() waits for every connection
        await server.wait_closed()


def silent_server() -> contextlib.AbstractAsyncContextManager[int]:
    """A server that accepts connections and never sends a byte; yields its port."""
    return _tcp_server(answer_and_close=False)


def closing_server() -> contextlib.AbstractAsyncContextManager[int]:
    """A server that accepts each connection and closes it without answering; yields its port."""
    return _tcp_server(answer_and_close=True)


def abort_mid_message(after: int = 3, text: str = "message") -> Callable[[Any], Awaitable[None]]:
    """A handler that sends ``after`` messages, then half a frame, then resets the TCP connection.

    What a client sees when a server crashes, or a network drops, in the middle of a message:
    no close frame, so ``ConnectionClosedError`` with 1006.

    >>> server = await wslab.start(faults.abort_mid_message(after=3))   # doctest: +SKIP
    """

    async def aborting(websocket: Any) -> None:
        await websocket.recv()  # wait until the client says something, so it is listening
        for n in range(1, after + 1):
            await websocket.send(f"{text} {n}")
        transport = websocket.transport
        transport.write(b"\x81\x7e\x04\x00" + b"x" * 100)  # announces 1024 bytes, sends 100
        sock = transport.get_extra_info("socket")
        if sock is not None:  # RST instead of FIN: the peer gets ECONNRESET, as after a crash
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    aborting.__name__ = "abort_mid_message"
    return aborting


class StalledClient:
    """A raw TCP WebSocket client that completes the handshake, then never reads again.

    Its receive buffer is small, so what the server sends piles up in the server's write buffer.
    ``abort()`` resets the connection (RST), as a crashed peer would.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send_text(self, text: str) -> None:
        """Send one masked text frame (the client can still write while it does not read)."""
        payload = text.encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        else:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def abort(self) -> None:
        """Reset the TCP connection instead of closing it (the server sees an error, no close frame)."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


@contextlib.asynccontextmanager
async def stalled_client(uri: str, receive_buffer: int = 4096) -> AsyncIterator[StalledClient]:
    """Connect to ``uri`` (``ws://host:port/path``), do the handshake, then stop reading.

    >>> async with stalled_client(server.uri) as client:   # doctest: +SKIP
    ...     ...  # the server's sends to it now fill its write buffer
    """
    sock = await _handshake(uri, receive_buffer)
    client = StalledClient(sock)
    try:
        yield client
    finally:
        client.abort()


@contextlib.asynccontextmanager
async def lingering_client(uri: str) -> AsyncIterator[socket.socket]:
    """A client that answers the server's close frame but keeps its TCP connection open.

    Closing such a peer takes the server its whole ``close_timeout``: websockets waits for the TCP
    connection to end, not only for the close frame.
    """
    sock = await _handshake(uri, 65536)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()

    async def answer_close() -> None:
        data = b""
        while True:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                return
            data += chunk
            while len(data) >= 2:  # the server's frames are unmasked, with short payloads here
                length = data[1] & 0x7F
                if len(data) < 2 + length:
                    break
                opcode, payload, data = data[0] & 0x0F, data[2 : 2 + length], data[2 + length :]
                if opcode == 0x8:  # a close frame: echo it back, masked with a zero mask, and keep the socket
                    await loop.sock_sendall(sock, bytes([0x88, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)

    task = asyncio.create_task(answer_close())
    try:
        yield sock
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await task
        sock.close()


async def _handshake(uri: str, receive_buffer: int) -> socket.socket:
    """Open a TCP connection to ``uri`` and complete the opening handshake by hand."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme != "ws" or not parts.hostname or parts.port is None:
        raise ValueError(f"a fault client needs ws://host:port/path, got {uri!r}")
    sock = socket.socket(socket.AF_INET6 if ":" in parts.hostname else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)  # before connect: the window stays small
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(5):
            await loop.sock_connect(sock, (parts.hostname, parts.port))
            key = base64.b64encode(os.urandom(16)).decode()
            request = (
                f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            await loop.sock_sendall(sock, request.encode())
            head = b""
            while b"\r\n\r\n" not in head:  # read the 101 byte by byte: nothing after it is consumed
                byte = await loop.sock_recv(sock, 1)
                if not byte:
                    raise ConnectionError(f"{uri}: the server closed the connection during the handshake")
                head += byte
    except BaseException:
        sock.close()
        raise
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise ConnectionError(f"{uri}: handshake refused: {head.splitlines()[0].decode('latin-1')}")
    return sock


@contextlib.contextmanager
def proxy_in_environment(url: str = "http://127.0.0.1:9", variables: Sequence[str] = ("http_proxy", "https_proxy", "all_proxy")) -> Iterator[str]:
    """Set the proxy variables of many hubs and company networks, then restore them all.

    For ``ws://`` URIs, ``connect()`` takes the first of ``ws_proxy``, ``socks_proxy``, ``https_proxy`` and
    ``http_proxy`` that is set (``wss://``: ``wss_proxy``, ``socks_proxy``, ``https_proxy``); ``all_proxy``
    is not read, but is set by default too, as real environments do. The default points at a closed port, so a
    client that honours it fails fast. Every other proxy variable, and ``no_proxy``, is cleared while inside:
    ``proxy_in_environment("socks5h://127.0.0.1:9", ["socks_proxy"])`` sets a SOCKS proxy alone.
    """
    names = [f"{scheme}_proxy" for scheme in ("http", "https", "all", "ws", "wss", "socks", "no")]
    names += [name.upper() for name in names]
    saved = {name: os.environ.get(name) for name in names}
    try:
        for name in names:
            os.environ.pop(name, None)
        for name in variables:
            os.environ[name] = url
        yield url
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def paused_process(pid: int) -> Iterator[None]:
    """``pid`` stopped with SIGSTOP for the block, then continued: a server that keeps its sockets and accepts
    connections (the kernel does that) but answers nothing, the hardest failure for a client to tell apart."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
