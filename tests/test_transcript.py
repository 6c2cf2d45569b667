"""Transcripts: what a server's handlers printed and what happened to each client."""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

import wslab
from wslab import Transcript


async def greeter(websocket) -> None:  # type: ignore[no-untyped-def]
    name = await websocket.recv()
    print(f"greeting {name}", end="")
    print(" politely")
    await websocket.send(f"hello {name}")


async def test_handler_prints_go_to_the_transcript_not_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    server = await wslab.start(greeter)
    for name in ("ada", "bob"):
        async with connect(server.uri + f"/room/{name}") as ws:
            await ws.send(name)
            assert await ws.recv() == f"hello {name}"
    await server.show()
    await server.stop()
    assert capsys.readouterr().out.splitlines() == [
        "client 1: connected to /room/ada",
        "client 1: greeting ada politely",
        "client 1: closed 1000 (OK)",
        "client 2: connected to /room/bob",
        "client 2: greeting bob politely",
        "client 2: closed 1000 (OK)",
    ]


async def test_show_prints_only_what_is_new(capsys: pytest.CaptureFixture[str]) -> None:
    server = await wslab.start(greeter)
    await server.show()
    async with connect(server.uri) as ws:
        await ws.send("x")
        await ws.recv()
    await server.show()
    await server.show()
    await server.show(everything=True)
    await server.stop()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "(nothing new)"
    assert out[1:4] == ["client 1: connected to /", "client 1: greeting x politely", "client 1: closed 1000 (OK)"]
    assert out[4] == "(nothing new)"
    assert out[5:] == out[1:4]


async def test_handler_errors_and_close_codes_are_recorded() -> None:
    async def fragile(websocket) -> None:  # type: ignore[no-untyped-def]
        message = await websocket.recv()
        if message == "bye":
            await websocket.close(4000, "asked to leave")
            return
        raise ValueError(f"cannot handle {message!r}")

    server = await wslab.start(fragile)
    async with connect(server.uri) as ws:
        await ws.send("boom")
        with pytest.raises(ConnectionClosedError) as caught:
            await ws.recv()
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1011
    async with connect(server.uri) as ws:
        await ws.send("bye")
        await ws.wait_closed()
    await server.settle()
    assert server.transcript.lines == [
        "client 1: connected to /",
        "client 1: connection handler failed: ValueError: cannot handle 'boom'",
        "client 1: closed 1011 (internal error)",
        "client 2: connected to /",
        "client 2: closed 4000 (private use) asked to leave",
    ]
    await server.stop()


async def test_a_client_that_vanishes_is_recorded_as_abnormal() -> None:
    server = await wslab.start(greeter)
    ws = await connect(server.uri)
    ws.transport.abort()  # no close frame
    await server.wait_idle()
    assert server.transcript.lines[-1] == "client 1: closed 1006 (abnormal closure [internal])"
    await server.stop()


async def test_handshake_failures_reach_the_transcript() -> None:
    import asyncio

    server = await wslab.start(greeter)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not an Upgrade request
    assert (await reader.readline()).startswith(b"HTTP/1.1 426")
    writer.close()
    await writer.wait_closed()
    await server.stop()
    assert server.transcript.lines == [
        "HTTP / -> 426 Upgrade Required (missing Connection header)"
    ]


async def test_http_answers_and_a_users_process_response_are_both_kept() -> None:
    from http import HTTPStatus

    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    def health(connection, request):  # type: ignore[no-untyped-def]
        if request.path == "/health":
            return connection.respond(HTTPStatus.OK, "ok\n")
        return None

    def tag(connection, request, response):  # type: ignore[no-untyped-def]
        response.headers["X-Seen"] = "yes"

    server = await wslab.start(greeter, process_request=health, process_response=tag, origins=["http://good"])
    with pytest.raises(InvalidStatus) as caught:
        await connect(server.uri, origin="http://evil")
    assert caught.value.response.status_code == 403
    assert caught.value.response.headers["X-Seen"] == "yes"
    with pytest.raises(InvalidStatus) as caught:
        await connect(server.uri + "/health")
    assert caught.value.response.status_code == 200
    await server.stop()
    assert server.transcript.lines == [
        "HTTP / -> 403 Forbidden (invalid Origin header: http://evil)",
        "HTTP /health -> 200 OK",
    ]


async def test_prints_outside_handlers_are_untouched(capsys: pytest.CaptureFixture[str]) -> None:
    server = await wslab.start(greeter)
    print("from the test itself")
    await server.stop()
    assert capsys.readouterr().out == "from the test itself\n"
    assert server.transcript.lines == []


def test_transcript_basics(capsys: pytest.CaptureFixture[str]) -> None:
    transcript = Transcript()
    transcript.add("one\ntwo")
    assert str(transcript) == "one\ntwo"
    transcript.clear()
    transcript.show()
    assert capsys.readouterr().out == "(nothing new)\n"


def test_transcript_keeps_only_the_newest_lines(capsys: pytest.CaptureFixture[str]) -> None:
    transcript = Transcript(max_lines=3)
    transcript.add("1\n2")
    transcript.show()
    for line in "345":
        transcript.add(line)
    assert transcript.lines == ["3", "4", "5"]
    transcript.show()
    assert capsys.readouterr().out.splitlines() == ["1", "2", "3", "4", "5"]


async def test_a_close_the_server_sent_is_recorded_with_its_code() -> None:
    import asyncio

    from wslab.frames import Opcode, encode_frame, read_frame, upgrade_request

    server = await wslab.start(greeter)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(upgrade_request(f"{server.host}:{server.port}", "/raw"))
    await reader.readuntil(b"\r\n\r\n")
    writer.write(encode_frame(Opcode.TEXT, b"unmasked"))  # a client must mask: the server fails the connection
    assert (await read_frame(reader)).opcode == Opcode.CLOSE
    writer.close()
    await writer.wait_closed()
    await server.wait_idle()
    await server.stop()
    assert server.transcript.lines[-1] == (
        "client 1: closed by the server with 1002 (protocol error) incorrect masking; no close frame received"
    )


async def test_a_handler_that_drops_the_tcp_connection_is_recorded_as_1006() -> None:
    """No close frame left the server, so the transcript must not claim one (the client saw 1006)."""

    async def dropper(websocket) -> None:  # type: ignore[no-untyped-def]
        await websocket.recv()
        websocket.transport.abort()

    server = await wslab.start(dropper)
    async with connect(server.uri, proxy=None) as client:
        await client.send("x")
        with pytest.raises(ConnectionClosedError) as caught:
            await client.recv()
    assert caught.value.rcvd is None and caught.value.sent is None
    await server.stop()
    assert server.transcript.lines == ["client 1: connected to /", "client 1: closed 1006 (abnormal closure [internal])"]
