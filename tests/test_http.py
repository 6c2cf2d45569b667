"""wslab.http_get: plain HTTP answers from the servers the chapters start."""

from __future__ import annotations

import asyncio
from http import HTTPStatus

import pytest

import wslab

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
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with pytest.raises(TimeoutError):
        await wslab.http_get(f"http://127.0.0.1:{port}/", timeout=0.2)
    server.close()
    await server.wait_closed()
