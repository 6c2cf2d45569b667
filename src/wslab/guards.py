"""Guards for a server: headers read safely, token authentication at the handshake, a per-connection rate limit."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Callable, Collection
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

__all__ = ["LIST_HEADERS", "RateLimit", "RepeatedHeader", "header", "rate_limited", "request_token", "token_auth"]

# Headers that HTTP defines as lists: sent several times, they mean their values joined in order
# (RFC 9110, section 5.3), with ", "; ``Cookie`` with "; " (how HTTP/2 splits it, RFC 9113, 8.2.3).
LIST_HEADERS: dict[str, str] = {"x-forwarded-for": ", ", "upgrade": ", ", "cookie": "; "}


class RepeatedHeader(ValueError):
    """A request sent a header more than once that must come once (``Origin``, ``Authorization`` ...).

    A ``process_request`` answers it with 400 Bad Request and ``str(exc)`` as the body.
    """


def header(headers: Headers, name: str) -> str | None:
    """The value of the request header ``name``, or None if it is absent.

    A list header (``LIST_HEADERS``: ``X-Forwarded-For``, ``Cookie`` ...) sent several times gives its
    values joined, as HTTP says. Any other header sent twice is ambiguous (which one is checked, which one
    does the next program read?): :class:`RepeatedHeader`, where ``headers[name]`` would fail with
    ``MultipleValuesError``, which websockets answers with 500.

    >>> header(Headers([("X-Forwarded-For", "10.0.0.1"), ("X-Forwarded-For", "10.0.0.2")]), "X-Forwarded-For")
    '10.0.0.1, 10.0.0.2'
    >>> header(Headers([("Origin", "https://a.example"), ("Origin", "https://b.example")]), "Origin")
    Traceback (most recent call last):
    ...
    wslab.guards.RepeatedHeader: Bad request: 2 Origin headers; send it once.
    """
    values = headers.get_all(name)
    if len(values) <= 1:
        return values[0] if values else None
    separator = LIST_HEADERS.get(name.lower())
    if separator is None:
        raise RepeatedHeader(f"Bad request: {len(values)} {name} headers; send it once.")
    return separator.join(values)


def request_token(path: str, headers: Headers) -> str | None:
    """The token a client sent: ``Authorization: Bearer <token>``, else a ``token`` cookie, else
    ``?token=<token>``; None if none of them. Two ``Authorization`` headers: :class:`RepeatedHeader`.

    >>> request_token("/chat?token=abc", Headers())
    'abc'
    >>> request_token("/chat", Headers({"Cookie": "theme=dark; token=abc"}))
    'abc'
    """
    authorization = header(headers, "Authorization") or ""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    cookies = SimpleCookie()
    with contextlib.suppress(CookieError):  # a malformed Cookie header counts as no cookie
        cookies.load(header(headers, "Cookie") or "")
    if "token" in cookies and cookies["token"].value:
        return cookies["token"].value
    values = parse_qs(path.partition("?")[2]).get("token")  # not urlsplit(): "//[x" is no URL, but a path
    return values[0] if values else None


def token_auth(tokens: Collection[str]) -> Callable[[ServerConnection, Request], Response | None]:
    """A ``process_request`` that answers 401 to a client without a valid token (400 to a repeated header).

    The token is read by :func:`request_token` and compared in constant time.

    >>> server = await wslab.start(handler, process_request=token_auth({"s3cret"}))  # doctest: +SKIP
    """
    known = [token.encode() for token in tokens]

    def check(connection: ServerConnection, request: Request) -> Response | None:
        try:
            token = request_token(request.path, request.headers)
        except RepeatedHeader as exc:
            return connection.respond(HTTPStatus.BAD_REQUEST, f"{exc}\n")
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
