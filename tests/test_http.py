"""wslab.http_get: plain HTTP answers from the servers the chapters start."""

from __future__ import annotations

import asyncio
import re
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
    assert server.transcript.lines == ["HTTP / -> 426 Upgrade Required (missing Connection header)"]


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


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP answer: 'SSH-2.0-OpenSSH_9.2'"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed the connection after 5 bytes"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length is not a number: '-1'"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000, "headers are too long"),
    ],
)
async def test_answers_that_are_not_http_get_a_clear_error(answer: bytes, error: str) -> None:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # read the request: closing with unread data would reset
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(reply, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    try:
        with pytest.raises(wslab.NoHttpAnswer, match=re.escape(error)) as caught:
            await wslab.http_get(url, timeout=2)
        assert url in str(caught.value)
    finally:
        server.close()
        await server.wait_closed()
