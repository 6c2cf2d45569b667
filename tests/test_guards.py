"""Token auth, origin checks and the per-connection rate limit, against real connections."""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.asyncio.client import connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError, InvalidStatus

import wslab
from wslab import RateLimit, rate_limited, request_token, token_auth

from .conftest import echo


async def test_request_token_reads_header_then_cookie_then_query() -> None:
    assert request_token("/?token=q", Headers({"Authorization": "Bearer h", "Cookie": "token=c"})) == "h"
    assert request_token("/?token=q", Headers({"Cookie": "theme=dark; token=c"})) == "c"
    assert request_token("/chat?room=1&token=q", Headers()) == "q"
    assert request_token("/?token=q", Headers({"Cookie": 'token="unterminated'})) == "q"
    assert request_token("/", Headers({"Cookie": "token="})) is None
    assert request_token("/chat", Headers({"Authorization": "Basic xyz"})) is None
    assert request_token("/chat", Headers()) is None


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/?token=s3cret", {}), ("/", {"Authorization": "Bearer s3cret"}), ("/", {"Cookie": "token=s3cret"})],
    ids=["query", "header", "cookie"],
)
async def test_a_good_token_gets_in(path: str, headers: dict[str, str]) -> None:
    async with wslab.start(echo, process_request=token_auth({"s3cret"})) as server:
        async with connect(server.uri + path, additional_headers=headers) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"


@pytest.mark.parametrize(
    ("path", "headers", "body"),
    [
        ("/", {}, b"Missing token"),
        ("/?token=guess", {}, b"Invalid token"),
        ("/", {"Authorization": "Bearer guess"}, b"Invalid token"),
    ],
    ids=["no-token", "wrong-query-token", "wrong-header-token"],
)
async def test_a_bad_token_gets_401(path: str, headers: dict[str, str], body: bytes) -> None:
    async with wslab.start(echo, process_request=token_auth({"s3cret"})) as server:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(server.uri + path, additional_headers=headers):
                pass
        assert caught.value.response.status_code == 401
        assert caught.value.response.body.startswith(body)
        assert not server.connections


async def test_origins_refuse_a_foreign_page_with_403() -> None:
    async with wslab.start(echo, origins=["https://app.example"]) as server:
        async with connect(server.uri, origin="https://app.example") as ws:
            await ws.send("ok")
            assert await ws.recv() == "ok"
        for origin in ("https://evil.example", None):
            with pytest.raises(InvalidStatus) as caught:
                async with connect(server.uri, origin=origin):
                    pass
            assert caught.value.response.status_code == 403


def test_rate_limit_refills_over_time() -> None:
    now = [0.0]
    limit = RateLimit(per_second=2, burst=3, clock=lambda: now[0])
    assert [limit.allow() for _ in range(4)] == [True, True, True, False]
    now[0] = 0.5  # one token back
    assert [limit.allow() for _ in range(2)] == [True, False]
    now[0] = 100.0  # never more than the burst
    assert [limit.allow() for _ in range(4)] == [True, True, True, False]


def test_rate_limit_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RateLimit(per_second=0, burst=1)
    with pytest.raises(ValueError):
        RateLimit(per_second=1, burst=0)


async def limited_echo(websocket) -> None:  # type: ignore[no-untyped-def]
    async for message in rate_limited(websocket, RateLimit(per_second=1, burst=5)):
        await websocket.send(message)


async def test_a_flooding_client_is_closed_with_1008() -> None:
    async with wslab.start(limited_echo) as server:
        async with connect(server.uri) as ws:
            for n in range(50):
                await ws.send(f"spam {n}")
            replies = []
            with pytest.raises(ConnectionClosedError) as caught:
                async for message in ws:
                    replies.append(message)
        assert caught.value.rcvd is not None
        assert (caught.value.rcvd.code, caught.value.rcvd.reason) == (1008, "rate limit exceeded")
        assert replies == [f"spam {n}" for n in range(5)]


async def test_a_polite_client_is_served() -> None:
    async with wslab.start(limited_echo) as server:
        async with connect(server.uri) as ws:
            for n in range(5):
                await ws.send(str(n))
                assert await ws.recv() == str(n)
        await server.settle()
        assert "closed 1000 (OK)" in "\n".join(server.transcript.lines)


async def test_closing_a_flooding_client_without_draining_waits_for_close_timeout() -> None:
    """Why rate_limited drains: websockets stops reading while its queue is full, so the client's answering
    close frame stays behind the flood and a plain close() lasts the whole close_timeout."""

    async def close_at_once(websocket) -> None:  # type: ignore[no-untyped-def]
        await websocket.recv()
        await websocket.close(1008, "rate limit exceeded")  # 49 messages still coming

    async def closing_time(handler) -> float:  # type: ignore[no-untyped-def]
        async with wslab.start(handler, close_timeout=1) as server:
            async with connect(server.uri, close_timeout=1) as ws:
                for n in range(50):
                    await ws.send(f"spam {n}")
                started = time.perf_counter()
                with pytest.raises(ConnectionClosedError):
                    async for _ in ws:
                        pass
                await asyncio.wait_for(server.wait_idle(), 5)
                return time.perf_counter() - started

    assert await closing_time(close_at_once) >= 0.9  # the server waited out close_timeout
    assert await closing_time(limited_echo) < 0.9
