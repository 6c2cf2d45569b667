"""Token auth, origin checks and the per-connection rate limit, against real connections."""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError, InvalidStatus

import wslab
from wslab import RateLimit, rate_limited, request_token, token_auth

from .conftest import echo


async def test_request_token_reads_header_first_then_query() -> None:
    assert request_token("/?token=q", Headers({"Authorization": "Bearer h"})) == "h"
    assert request_token("/chat?room=1&token=q", Headers()) == "q"
    assert request_token("/chat", Headers({"Authorization": "Basic xyz"})) is None
    assert request_token("/chat", Headers()) is None


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/?token=s3cret", {}), ("/", {"Authorization": "Bearer s3cret"})],
    ids=["query", "header"],
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
