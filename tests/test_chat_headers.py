"""Odd handshakes over a raw socket: repeated, odd and non-ASCII headers and query strings.

Against the real servers' ``process_request`` (the chat with each way of authenticating, the cluster chat
behind a trusted proxy, a plain server with ``token_auth``), every request gets a clear answer: never
a 500, never a traceback in the transcript; a header that must come once but came twice gets 400.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.datastructures import Headers

import wslab
from wslab.chat import ChatServer
from wslab.chat.cluster import ClusterChat
from wslab.guards import RepeatedHeader, header, request_token, token_auth

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
BASE = [("Host", "127.0.0.1"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY), ("Sec-WebSocket-Version", "13")]
LIVE = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Header values as websockets reads them (ISO-8859-1): printable ASCII, the odd characters of URLs and
# cookies, and Latin-1 letters; no CR, LF or NUL (those end a header or are refused by websockets).
VALUE = st.text(st.one_of(st.characters(min_codepoint=0x20, max_codepoint=0x7E), st.sampled_from("[]%;,=\"\\\t éÿ")), max_size=30)
NAME = st.sampled_from(["Origin", "Authorization", "Cookie", "X-Forwarded-For", "Upgrade", "Host", "Connection", "X-Custom"])
GOOD_VALUE = {
    "Origin": ["http://127.0.0.1", "http://[x", "null"],
    "Authorization": ["Bearer t", "Bearer wrong", "Basic eDp5"],
    "Cookie": ["token=t", "a=1; token=t", 'token="unterminated'],
    "X-Forwarded-For": ["10.0.0.1", "10.0.0.2, 10.0.0.3"],
    "Upgrade": ["websocket", "h2c"],
    "Host": ["127.0.0.1", "evil.example"],
    "Connection": ["Upgrade", "keep-alive"],
    "X-Custom": ["x"],
}
EXTRA = NAME.flatmap(lambda name: st.tuples(st.just(name), st.one_of(st.sampled_from(GOOD_VALUE[name]), VALUE)))
PATH = st.one_of(
    st.sampled_from(["/ws", "/", "/health", "/nowhere", "//[x/ws", "/ws#f"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30).map(lambda q: "/ws?" + q),
    st.sampled_from(["/ws?chat_token=t", "/ws?token=t", "/ws?chat_token=t&chat_token=u", "/?token=t&token=x", "/ws?%ff%fe=%00"]),
)
REQUEST = st.tuples(PATH, st.lists(EXTRA, max_size=4), st.booleans())


def raw_request(path: str, extra: list[tuple[str, str]], doubled: bool) -> bytes:
    """A handshake with ``extra`` header lines; ``doubled``: each extra line sent twice."""
    lines = [f"GET {path} HTTP/1.1", *(f"{n}: {v}" for n, v in BASE)]
    for name, value in extra:
        lines += [f"{name}: {value}"] * (2 if doubled else 1)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def status_of(port: int, data: bytes) -> int:
    """Send ``data`` as a raw HTTP request; the status code of the answer (0 if the server just closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1])
    except asyncio.IncompleteReadError:
        return 0
    finally:
        writer.close()


async def chat(**kwargs: Any) -> wslab.BackgroundServer:
    return await ChatServer(**kwargs).start(name="chat")


async def cluster() -> wslab.BackgroundServer:
    return await ClusterChat(trusted_proxies=("127.0.0.1",)).start(name="cluster")


async def until_closed(connection: Any) -> None:
    await connection.wait_closed()  # these raw clients send no frame: nothing to echo


async def token_server() -> wslab.BackgroundServer:
    return await wslab.start(until_closed, name="vault", process_request=token_auth({"t"}))


SERVERS: dict[str, Callable[[], Awaitable[wslab.BackgroundServer]]] = {
    "chat": chat,
    "chat-message-token": lambda: chat(token="t"),
    "chat-query-token": lambda: chat(token="t", auth="query"),
    "token_auth": token_server,
    "cluster": cluster,
}


def check_answers(make: Callable[[], Awaitable[wslab.BackgroundServer]], requests: list[tuple[str, list[tuple[str, str]], bool]]) -> None:
    async def scenario() -> None:
        server = await make()
        try:
            for path, extra, doubled in requests:
                status = await status_of(server.port, raw_request(path, extra, doubled))
                assert status in (101, 200, 400, 401, 403, 404, 421, 426), (path, extra, doubled, status)
        finally:
            await server.stop(close_timeout=0.5)
        text = "\n".join(server.transcript.lines)
        for path in sorted({path for path, _, _ in requests}, key=len, reverse=True):
            text = text.replace(path, "PATH")  # the transcript names each path, which may say anything
        for sign in ("Traceback", "failed", " 500 ", "Error"):
            assert sign not in text, text

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["chat", "chat-message-token", "chat-query-token", "token_auth", "cluster"])
@LIVE
@given(requests=st.lists(REQUEST, min_size=1, max_size=6))
def test_odd_handshakes_get_a_clear_answer_never_a_500(kind: str, requests: list[tuple[str, list[tuple[str, str]], bool]]) -> None:
    check_answers(SERVERS[kind], requests)


@pytest.mark.parametrize("kind", ["chat", "chat-query-token", "token_auth", "cluster"])
@pytest.mark.parametrize("name", ["Origin", "Authorization"])
def test_a_header_that_must_come_once_sent_twice_gets_400(kind: str, name: str) -> None:
    value = GOOD_VALUE[name][0]

    async def scenario() -> None:
        server = await SERVERS[kind]()
        try:
            status = await status_of(server.port, raw_request("/ws", [(name, value)], doubled=True))
        finally:
            await server.stop(close_timeout=0.5)
        if kind == "token_auth" and name == "Origin":
            assert status == 401  # token_auth never reads Origin: this request has no token
        elif kind in ("chat", "cluster") and name == "Authorization":
            assert status == 101  # a chat without a token never reads Authorization
        else:
            assert status == 400, status
            assert "HTTP /ws -> 400 Bad Request" in server.transcript.lines

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["chat", "cluster"])
def test_list_headers_sent_twice_are_joined_not_refused(kind: str) -> None:
    extra = [("X-Forwarded-For", "10.0.0.1"), ("X-Forwarded-For", "10.0.0.2"), ("Cookie", "a=1"), ("Cookie", "b=2")]

    async def scenario() -> None:
        server = await SERVERS[kind]()
        try:
            status = await status_of(server.port, raw_request("/ws", extra, doubled=False))
        finally:
            await server.stop(close_timeout=0.5)
        assert status == 101

    asyncio.run(scenario())


def test_header_joins_list_headers_and_refuses_other_repeats() -> None:
    headers = Headers([("Cookie", "a=1"), ("Cookie", "token=c"), ("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "5.6.7.8"),
                       ("Origin", "https://a.example"), ("Origin", "https://b.example")])
    assert header(headers, "cookie") == "a=1; token=c"
    assert header(headers, "X-Forwarded-For") == "1.2.3.4, 5.6.7.8"
    assert header(headers, "Referer") is None
    with pytest.raises(RepeatedHeader, match="2 Origin headers; send it once"):
        header(headers, "Origin")
    assert request_token("/", headers) == "c"  # the token cookie from the second Cookie line


PLAIN = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF).filter(lambda c: c != "\x7f"), max_size=40)


@settings(max_examples=500, deadline=None)
@given(path=st.text(max_size=40).map(lambda s: "/chat?" + s),
       lines=st.lists(st.tuples(st.sampled_from(["Authorization", "Cookie", "X-Forwarded-For"]), PLAIN), max_size=3))
def test_request_token_answers_or_refuses_a_repeat_never_crashes(path: str, lines: list[tuple[str, str]]) -> None:
    headers = Headers(lines)
    try:
        token = request_token(path, headers)
    except RepeatedHeader:
        assert len(headers.get_all("Authorization")) > 1
    else:
        assert token is None or isinstance(token, str)
