"""Guards for a server: token authentication at the handshake, and a per-connection rate limit."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Callable, Collection
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

__all__ = ["RateLimit", "rate_limited", "request_token", "token_auth"]


def request_token(path: str, headers: Headers) -> str | None:
    """The token a client sent: ``Authorization: Bearer <token>``, else a ``token`` cookie, else
    ``?token=<token>``; None if none of them.

    >>> request_token("/chat?token=abc", Headers())
    'abc'
    >>> request_token("/chat", Headers({"Cookie": "theme=dark; token=abc"}))
    'abc'
    """
    authorization = headers.get("Authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    cookies = SimpleCookie()
    with contextlib.suppress(CookieError):  # a malformed Cookie header counts as no cookie
        cookies.load(headers.get("Cookie", ""))
    if "token" in cookies and cookies["token"].value:
        return cookies["token"].value
    values = parse_qs(urlsplit(path).query).get("token")
    return values[0] if values else None


def token_auth(tokens: Collection[str]) -> Callable[[ServerConnection, Request], Response | None]:
    """A ``process_request`` that answers 401 to a client without a valid token.

    The token is read by :func:`request_token` and compared in constant time.

    >>> server = await wslab.start(handler, process_request=token_auth({"s3cret"}))  # doctest: +SKIP
    """
    known = [token.encode() for token in tokens]

    def check(connection: ServerConnection, request: Request) -> Response | None:
        token = request_token(request.path, request.headers)
        if token is None:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Missing token: send 'Authorization: Bearer <token>'.\n")
        if not any(hmac.compare_digest(token.encode(), good) for good in known):
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Invalid token.\n")
        return None  # go on with the WebSocket handshake

    return check


class RateLimit:
    """A token bucket: ``burst`` messages at once, then ``per_second`` on average.

    >>> limit = RateLimit(per_second=1, burst=2, clock=lambda: 0.0)
    >>> [limit.allow() for _ in range(3)]
    [True, True, False]
    """

    def __init__(self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError(f"need per_second > 0 and burst >= 1, got {per_second} and {burst}")
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def allow(self) -> bool:
        """Take one token if there is one; False means: over the limit."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.per_second)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


async def rate_limited(connection: ServerConnection, limit: RateLimit) -> AsyncIterator[str | bytes]:
    """Like ``async for message in connection``, but close with 1008 when the client goes over ``limit``.

    >>> async for message in rate_limited(websocket, RateLimit(5, burst=10)):  # doctest: +SKIP
    ...     await websocket.send(message)
    """
    async for message in connection:
        if not limit.allow():
            closing = asyncio.create_task(connection.close(CloseCode.POLICY_VIOLATION, "rate limit exceeded"))
            # Discard what the flood left queued: websockets stops reading while its queue is full,
            # and the client's answering close frame waits behind those messages.
            with contextlib.suppress(ConnectionClosed):  # ends with our 1008, which is no error here
                async for _ in connection:
                    pass
            await closing
            return
        yield message
