"""The mistakes learners make get errors that say what to do next."""

from __future__ import annotations

import asyncio

import pytest

import wslab
from wslab import LegacyHandlerError, NoEventLoopError, PortInUseError

from .conftest import echo


async def old_echo(websocket, path):  # type: ignore[no-untyped-def]
    async for message in websocket:
        await websocket.send(message)


@pytest.mark.parametrize("start", [wslab.start, wslab.start_in_thread])
async def test_two_argument_handler_is_rejected_with_the_fix(start) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LegacyHandlerError) as caught:
        start(old_echo)
    message = str(caught.value)
    assert "old_echo(websocket, path)" in message
    assert "async def old_echo(websocket):" in message
    assert "websocket.request.path" in message
    assert wslab.running() == {}


async def test_a_handler_with_an_optional_path_is_accepted() -> None:
    async def flexible(websocket, path=None):  # type: ignore[no-untyped-def]
        await websocket.send(str(path))

    server = await wslab.start(flexible)
    await server.stop()


def test_a_plain_function_is_rejected() -> None:
    def not_async(websocket):  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(TypeError, match="async def not_async"):
        wslab.start_in_thread(not_async)


def test_a_handler_without_arguments_is_rejected() -> None:
    async def nothing():  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(TypeError, match=r"async def nothing\(websocket\)"):
        wslab.start_in_thread(nothing)


async def test_taken_port_names_the_port_and_suggests_port_zero() -> None:
    holder = await wslab.start(echo, name="holder")
    with pytest.raises(PortInUseError) as caught:
        await wslab.start(echo, name="newcomer", port=holder.port)
    message = str(caught.value)
    assert f"port {holder.port}" in message
    assert "port=0" in message
    assert "'holder'" in message  # it names the wslab server that holds the port
    assert isinstance(caught.value, OSError)
    assert set(wslab.running()) == {"holder"}
    await holder.stop()


def test_taken_port_by_another_program() -> None:
    import socket

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use. Another program"):
            wslab.start_in_thread(echo, port=port)
    assert wslab.running() == {}


def test_start_without_a_running_loop_says_what_to_do() -> None:
    server = wslab.start(echo)  # a script forgot both the loop and the await
    with pytest.raises(NoEventLoopError) as caught:
        server.uri
    message = str(caught.value)
    assert "server = await wslab.start(echo, ...)" in message
    assert "asyncio.run(main())" in message
    assert "start_in_thread" in message


async def test_forgetting_await_says_so() -> None:
    starting = wslab.start(echo)
    with pytest.raises(AttributeError, match=r"server = await wslab.start\(echo, ...\)"):
        starting.uri
    assert "await" in repr(starting)
    server = await starting  # awaiting it late still works
    await server.stop()


async def test_fixed_port_error_leaves_the_running_server_alone() -> None:
    first = await wslab.start(echo)
    with pytest.raises(PortInUseError):
        await wslab.start(echo, name="second", port=first.port)
    from websockets.asyncio.client import connect

    async with connect(first.uri) as ws:
        await ws.send("still here")
        assert await ws.recv() == "still here"
    await first.stop()
    await asyncio.sleep(0)


def test_start_can_be_run_by_an_old_style_loop() -> None:
    loop = asyncio.new_event_loop()
    try:
        server = loop.run_until_complete(wslab.start(echo))
        assert server.port > 0
        loop.run_until_complete(server.stop())
    finally:
        loop.close()
