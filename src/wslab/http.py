"""A plain HTTP GET with asyncio, for the HTTP side of a WebSocket server (pages, health checks, refusals)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

from websockets.datastructures import Headers

__all__ = ["HttpAnswer", "NoHttpAnswer", "http_get"]


class NoHttpAnswer(ConnectionError):
    """The server closed the connection, or sent something that is not HTTP, instead of an answer."""


@dataclass
class HttpAnswer:
    """What the server answered: ``status`` (200), ``reason`` ("OK"), ``headers``, ``body``."""

    status: int
    reason: str
    headers: Headers  # case-insensitive; ``headers.get_all(name)`` shows a header sent twice
    body: bytes

    @property
    def text(self) -> str:
        """The body as UTF-8 text (bytes that are not UTF-8 show as U+FFFD, never an error)."""
        return self.body.decode(errors="replace")


async def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5) -> HttpAnswer:
    """GET ``url`` (``http://`` or a server's ``ws://`` address) without blocking the event loop.

    It runs on the kernel's loop next to the server it asks, so a background server keeps serving.
    A server that sends nothing for ``timeout`` seconds raises ``TimeoutError``; one that closes the
    connection, or answers with something that is not HTTP, raises :class:`NoHttpAnswer` naming the URL.

    >>> answer = await http_get(server.uri + "/health")       # doctest: +SKIP
    >>> answer.status, answer.headers["Content-Type"]          # doctest: +SKIP
    (200, 'text/plain; charset=utf-8')
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "ws") or not parts.hostname or parts.port is None:
        raise ValueError(f"http_get needs http://host:port/path or ws://host:port/path, got {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            try:
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                status_line, *header_lines = head.rstrip("\r\n").split("\r\n")
                answer_headers = Headers()
                for line in header_lines:
                    name, _, value = line.partition(":")
                    answer_headers[name.strip()] = value.strip()
                length = answer_headers.get("Content-Length")
                if length is not None and not length.isdigit():
                    raise NoHttpAnswer(f"GET {url}: the answer's Content-Length is not a number: {length[:40]!r}")
                if length is not None:
                    body = await reader.readexactly(int(length))
                else:
                    body = await reader.read()  # no length given: the body ends when the server closes
            finally:
                writer.close()
    except asyncio.IncompleteReadError as exc:
        got = f"after {len(exc.partial)} bytes" if exc.partial else "without answering"
        raise NoHttpAnswer(f"GET {url}: the server closed the connection {got}") from None
    except ConnectionResetError:
        raise NoHttpAnswer(f"GET {url}: the server reset the connection") from None
    except asyncio.LimitOverrunError:
        raise NoHttpAnswer(f"GET {url}: the answer's headers are too long (over 64 KiB)") from None
    version, _, rest = status_line.partition(" ")
    status, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or not status.isdigit():
        raise NoHttpAnswer(f"GET {url}: not an HTTP answer: {status_line[:80]!r}")
    return HttpAnswer(int(status), reason, answer_headers, body)
