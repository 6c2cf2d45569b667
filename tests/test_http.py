"""wslab.http_get: plain HTTP answers from the servers the chapters start."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus

import pytest

import wslab
from wslab import faults

from .conftest import echo


def pages(connection, request):  # type: ignore[no-untyped-def]
    if request.path == "/health?verbose=1":
        return connection.respond(HTTPStatus.OK, f"ok, asked by {request.headers.get('X-Probe', 'nobody')}\n")
    if request.path == "/twice":
        response = connection.respond(HTTPStatus.OK, "<p>hi</p>")
        response.headers["Content-Type"] = "text/html"  # adds a second Content-Type
        return response
    return None


async def test_status_headers_and_body_of_a_page() -> None:
    server = await wslab.start(echo, process_request=pages)
    answer = await wslab.http_get(server.uri + "/health?verbose=1", headers={"X-Probe": "pytest"})
    assert (answer.status, answer.reason, answer.text) == (200, "OK", "ok, asked by pytest\n")
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    twice = await wslab.http_get(server.uri.replace("ws://", "http://") + "/twice")
    assert twice.headers.get_all("Content-Type") == ["text/plain; charset=utf-8", "text/html"]
    await server.stop()


async def test_a_websocket_path_answers_426() -> None:
    server = await wslab.start(echo)
    answer = await wslab.http_get(server.uri)
    assert (answer.status, answer.reason) == (426, "Upgrade Required")
    assert "You need a WebSocket client" in answer.text
    await server.stop()
    # http_get asks with "Connection: close", which asks for no upgrade
    assert server.transcript.lines == ["HTTP / -> 426 Upgrade Required (invalid Connection header: close)"]


@pytest.mark.parametrize("url", ["https://127.0.0.1:1/", "ws://127.0.0.1/", "127.0.0.1:80"])
async def test_bad_urls_are_refused_with_a_clear_message(url: str) -> None:
    with pytest.raises(ValueError, match="http://host:port/path"):
        await wslab.http_get(url)


async def test_a_silent_server_times_out() -> None:
    async with faults.silent_server() as port:
        with pytest.raises(TimeoutError):
            await wslab.http_get(f"http://127.0.0.1:{port}/", timeout=0.2)


async def test_a_server_that_closes_without_answering_is_named() -> None:
    async with faults.closing_server() as port:
        url = f"http://127.0.0.1:{port}/health"
        with pytest.raises(wslab.NoHttpAnswer, match=f"GET {url}: the server closed the connection without answering"):
            await wslab.http_get(url, timeout=2)


@asynccontextmanager
async def answering(answer: bytes, *, close: bool = True) -> AsyncIterator[str]:
    """A server that reads the request, sends ``answer`` as it is, then closes or keeps the connection open."""
    requests: list[bytes] = []

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))  # read it: closing with unread data would reset
        writer.write(answer)
        await writer.drain()
        if not close:
            await reader.read()  # keep-alive: wait for the client to close
        writer.close()

    server = await asyncio.start_server(reply, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    finally:
        server.close()
        await server.wait_closed()
    assert all(b"\r\nConnection: close\r\n" in request for request in requests)


OK = b"HTTP/1.1 200 OK\r\n"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP answer: 'SSH-2.0-OpenSSH_9.2'"),
        (OK + b"Content-Length: 10\r\n\r\nshort", "closed the connection after 5 bytes of a 10-byte body"),
        (OK + b"Content-Le", "closed the connection after 27 bytes, before the headers ended"),
        (OK + b"Content-Length: -1\r\n\r\n", "Content-Length is not a number: '-1'"),
        (OK + b"Content-Length: \xb2\r\n\r\nx", "Content-Length is not a number: '\xb2'"),  # "²".isdigit()
        (OK + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nxy", "different Content-Length headers: '1, 2'"),
        (OK + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n", "over 1048576 (max_size)"),
        (b"HTTP/1.1 \xb2\xb2\xb2 OK\r\n\r\n", "the status line is not 'HTTP/1.x', 3 digits and a reason"),
        (b"HTTP/1.1 2OO OK\r\n\r\n", "the status line is not 'HTTP/1.x', 3 digits and a reason: 'HTTP/1.1 2OO OK'"),
        (OK + b"X: a\x01b\r\n\r\n", "the X header has a control character: 'a\\x01b'"),
        (OK + b"X: a\rb\r\n\r\n", "the X header has a control character"),
        (OK + b"X Y: 1\r\n\r\n", "a header line that is not 'Name: value': 'X Y: 1'"),
        (OK + b" folded\r\n\r\n", "a header line that is not 'Name: value'"),
        (OK + b"X: " + b"y" * 70000, "headers are too long"),
        (OK + b"X: y\r\n" * 20000, "headers are too long"),
        (OK + b"Transfer-Encoding: gzip, chunked\r\n\r\n", "Transfer-Encoding 'gzip, chunked' is not supported"),
        (OK + b"Transfer-Encoding: chunked\r\n" * 2 + b"\r\n", "'chunked, chunked' is not supported (only a single"),
        (OK + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", "both Content-Length and Transfer-Encoding"),
        (OK + b"Transfer-Encoding: chunked\r\n\r\n-1\r\n", "a chunk size that is not hexadecimal: '-1\\r\\n'"),
        (OK + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 40 + b"\r\n", "the chunked body is over 1048576 bytes"),
        (OK + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n", "a chunk of 3 bytes is not followed by CRLF"),
        (OK + b"Transfer-Encoding: chunked\r\n\r\n3\r\nab", "closed the connection after 2 bytes of a chunked body"),
        (OK + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX: \x00\r\n\r\n", "the X header has a control character"),
        (OK + b"\r\n" + b"x" * (2**20 + 1), "the body is over 1048576 bytes (max_size)"),
        (b"HTTP/1.1 100 Continue\r\n\r\n" * 9, "more than 8 interim (1xx) answers"),
    ],
)
async def test_answers_that_are_not_http_get_a_clear_error(answer: bytes, error: str) -> None:
    async with answering(answer) as url:
        with pytest.raises(wslab.NoHttpAnswer, match=re.escape(error)) as caught:
            await wslab.http_get(url, timeout=5)
        assert str(caught.value).startswith(f"GET {url}: ")


CHUNKS = b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\nchunked!!!\r\n0\r\nX-Sum: 1\r\n\r\n"  # an extension, a trailer
CHUNKED = OK + b"Transfer-Encoding: chunked\r\n\r\n" + CHUNKS


@pytest.mark.parametrize(
    ("answer", "status", "body"),
    [
        (OK + b"Content-Length: 5\r\n\r\nhello", 200, b"hello"),
        (OK + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 200, b"hello"),  # the same twice: allowed
        (OK + b"Content-Length: 000000000000000000002\r\n\r\nok", 200, b"ok"),  # leading zeros: still 2
        (CHUNKED, 200, b"hello chunked!!!"),
        (b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n", 204, b""),  # no body, whatever follows
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", 304, b""),
        (b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + OK + b"Content-Length: 2\r\n\r\nok", 200, b"ok"),
    ],
    ids=["length", "same-length-twice", "leading-zeros", "chunked", "204", "304", "103-then-200"],
)
async def test_a_server_that_keeps_the_connection_open_is_read_by_the_answers_framing(
    answer: bytes, status: int, body: bytes
) -> None:
    async with answering(answer, close=False) as url:
        got = await wslab.http_get(url, timeout=5)  # a keep-alive server: no waiting for the connection to end
    assert (got.status, got.body) == (status, body)


async def test_a_body_without_a_length_ends_with_the_connection() -> None:
    async with answering(OK + b"Content-Type: text/plain\r\n\r\nuntil the end", close=True) as url:
        assert (await wslab.http_get(url)).text == "until the end"
    async with answering(OK + b"\r\nbody", close=False) as url:
        with pytest.raises(TimeoutError, match=re.escape(
            f"GET {url}: the body did not end within 0.3 s (got 4 bytes of a body without a length, "
            "which ends when the server closes the connection)"
        )):
            await wslab.http_get(url, timeout=0.3)


async def test_a_timeout_says_how_much_of_the_answer_had_arrived() -> None:
    for answer, got in [
        (OK + b"X: 1\r\n", "the headers did not end within 0.3 s (got 'HTTP/1.1 200 OK' and 1 header line)"),
        (OK + b"Content-Length: 9\r\n\r\nabc", "the body did not end within 0.3 s (got 3 bytes of a 9-byte body)"),
        (OK + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", "(got 3 bytes of a chunked body)"),
    ]:
        async with answering(answer, close=False) as url:
            with pytest.raises(TimeoutError, match=re.escape(got)):
                await wslab.http_get(url, timeout=0.3)


@pytest.mark.parametrize(
    ("url", "headers"),
    [("http://127.0.0.1:1/a b", {}), ("http://127.0.0.1:1/é", {}), ("http://127.0.0.1:1/", {"X": "a\r\nEvil: 1"}),
     ("http://127.0.0.1:1/", {"X Y": "1"}), ("http://127.0.0.1:1/", {"X": "é"})],
)
async def test_a_request_that_cannot_be_sent_as_it_is_is_refused(url: str, headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="http_get cannot send the"):
        await wslab.http_get(url, headers=headers)


# ---------------------------------------------------------------- aiohttp's server, a peer nobody here wrote


@pytest.fixture
async def aiohttp_site() -> AsyncIterator[str]:
    """An aiohttp server: a plain page, a chunked stream, a 204, a body over max_size, a keep-alive check."""
    from aiohttp import web

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for n in range(40):
            await response.write(f"{n:02} ".encode() * 3000)  # 9,000 bytes a chunk
        await response.write_eof()
        return response

    async def page(request: web.Request) -> web.Response:
        match request.path:
            case "/plain":
                return web.Response(text="héllo")
            case "/empty":
                return web.Response(status=204)
            case "/big":
                return web.Response(body=b"x" * (2**20 + 1))
            case _:
                return web.Response(text=f"keep-alive asked: {request.keep_alive}")

    app = web.Application()
    app.router.add_get("/chunked", chunked)
    for path in ["/plain", "/empty", "/big", "/keep-alive"]:
        app.router.add_get(path, page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_aiohttp_pages_plain_chunked_and_empty(aiohttp_site: str) -> None:
    plain = await wslab.http_get(aiohttp_site + "/plain", timeout=5)
    assert (plain.status, plain.text, plain.headers["Content-Type"]) == (200, "héllo", "text/plain; charset=utf-8")
    chunked = await wslab.http_get(aiohttp_site + "/chunked", timeout=5)
    assert chunked.headers["Transfer-Encoding"] == "chunked"
    assert chunked.body == b"".join(f"{n:02} ".encode() * 3000 for n in range(40))
    empty = await wslab.http_get(aiohttp_site + "/empty", timeout=5)
    assert (empty.status, empty.body) == (204, b"")
    assert (await wslab.http_get(aiohttp_site + "/keep-alive", timeout=5)).text == "keep-alive asked: False"


async def test_aiohttp_body_over_max_size_is_refused(aiohttp_site: str) -> None:
    with pytest.raises(wslab.NoHttpAnswer, match=re.escape("the body is 1048577 bytes, over 1048576 (max_size)")):
        await wslab.http_get(aiohttp_site + "/big", timeout=5)
    assert len((await wslab.http_get(aiohttp_site + "/big", max_size=2**21)).body) == 2**20 + 1


@pytest.mark.parametrize(
    ("headers", "error"),
    [({"host": "evil"}, "sets 'host' itself"), ({"connection": "keep-alive"}, "sets 'connection' itself"),
     ({"X-Count": 3}, "sends text headers")],
)
async def test_headers_http_get_sets_or_cannot_send_are_refused_before_connecting(headers: dict, error: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=error):
        await wslab.http_get("http://127.0.0.1:9/", headers=headers)  # port 9: nothing is ever sent
