"""Outbox: per-client bounded queues; a stalled client never holds up the others, over real connections."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError

import wslab
from wslab import Outbox

BIG = b"x" * 1_000_000
COUNT = 50


async def leave(ws: ClientConnection) -> None:
    """Read whatever is still buffered while closing, so even a stalled client closes at once."""
    drain = asyncio.create_task(_drain(ws))
    await ws.close()
    await drain


async def send_many(ws: ClientConnection, count: int) -> None:
    for _ in range(count):
        await ws.send(BIG)


async def _drain(ws: ClientConnection) -> None:
    async for _ in ws:
        pass


def fan_out_server(maxsize: int = 16) -> tuple[set[Outbox], object]:
    outboxes: set[Outbox] = set()

    async def fan_out(websocket) -> None:  # type: ignore[no-untyped-def]
        async with Outbox(websocket, maxsize=maxsize) as outbox:
            outboxes.add(outbox)
            try:
                async for message in websocket:
                    for other in outboxes:
                        if other is not outbox:
                            other.put(message)
            finally:
                outboxes.discard(outbox)

    return outboxes, fan_out


async def test_messages_arrive_in_order() -> None:
    outboxes, handler = fan_out_server()
    async with wslab.start(handler) as server:
        async with connect(server.uri) as sender, connect(server.uri) as reader:
            for i in range(10):
                await sender.send(f"m{i}")
            assert [await reader.recv() for _ in range(10)] == [f"m{i}" for i in range(10)]
            assert sum(o.dropped for o in outboxes) == 0


async def test_a_stalled_client_does_not_hold_up_a_fast_one() -> None:
    outboxes, handler = fan_out_server(maxsize=4)
    async with wslab.start(handler, compression=None) as server:
        sender = await connect(server.uri)
        fast = await connect(server.uri)
        stalled = await connect(server.uri, max_queue=1)  # reads nothing
        try:
            sending = asyncio.create_task(send_many(sender, COUNT))
            async with asyncio.timeout(5):
                received = [await fast.recv() for _ in range(COUNT)]
            await sending
            assert len(received) == COUNT
            (stalled_box,) = [o for o in outboxes if o.sent < COUNT and o.dropped]
            assert len(stalled_box) <= stalled_box.maxsize
            # every message was sent, dropped, or is waiting, but for the one stuck in send()
            assert stalled_box.dropped + stalled_box.sent + len(stalled_box) == COUNT - 1
        finally:
            for ws in (sender, fast, stalled):
                await leave(ws)
        await server.settle()
        assert not any("failed" in line for line in str(server.transcript).splitlines())


async def test_a_client_that_leaves_ends_its_writer_quietly() -> None:
    outboxes, handler = fan_out_server()
    async with wslab.start(handler) as server:
        async with connect(server.uri) as sender:
            gone = await connect(server.uri)
            await gone.close()  # vanishes while others keep talking
            await sender.send("anyone?")
            await sender.send("still works")
            async with connect(server.uri) as late:
                await sender.send("hello late")
                assert await late.recv() == "hello late"
        await server.settle()
        assert not any("failed" in line for line in str(server.transcript).splitlines())


async def test_put_drops_the_oldest_when_full() -> None:
    async def hold(websocket) -> None:  # type: ignore[no-untyped-def]
        outbox = Outbox(websocket, maxsize=2)
        assert outbox.put("one") and outbox.put("two")
        assert outbox.put("three") is False  # "one" is dropped
        assert (len(outbox), outbox.dropped) == (2, 1)
        async with outbox:
            await websocket.recv()  # wait until the client has read both

    async with wslab.start(hold) as server:
        async with connect(server.uri) as ws:
            assert [await ws.recv(), await ws.recv()] == ["two", "three"]
            await ws.send("thanks")
        await server.settle()
        assert not any("failed" in line for line in str(server.transcript).splitlines())


async def test_bad_arguments_are_refused() -> None:
    async def check(websocket) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(ValueError, match="at least 1"):
            Outbox(websocket, maxsize=0)
        with pytest.raises(TypeError, match="json.dumps"):
            Outbox(websocket).put({"type": "say"})  # type: ignore[arg-type]
        await websocket.send("checked")

    async with wslab.start(check) as server:
        async with connect(server.uri) as ws:
            assert await ws.recv() == "checked"
        await server.settle()
        assert not any("failed" in line for line in str(server.transcript).splitlines())


def disconnecting_server(outboxes: list[Outbox], maxsize: int = 4) -> object:
    """A handler that pushes big messages into a ``when_full="disconnect"`` outbox until it is refused."""

    async def push(websocket) -> None:  # type: ignore[no-untyped-def]
        async with Outbox(websocket, maxsize=maxsize, when_full="disconnect", close_timeout=0.5) as outbox:
            outboxes.append(outbox)
            for n in range(1000):
                if not outbox.put(f"{n:04d}" + "x" * 100_000):
                    break
                await asyncio.sleep(0)  # let the writer run, as other clients' events would
            async for _ in websocket:  # ends with ConnectionClosed once the outbox has disconnected
                pass

    return push


async def test_disconnect_aborts_a_client_that_stopped_reading() -> None:
    """A stalled client cannot read the close frame: the outbox aborts it after close_timeout, cleanly."""
    outboxes: list[Outbox] = []
    async with wslab.start(disconnecting_server(outboxes), compression=None) as server:
        async with wslab.faults.stalled_client(server.uri):
            async with asyncio.timeout(5):
                await server.wait_idle(timeout=5)
        (outbox,) = outboxes
        assert outbox.disconnected and outbox.dropped == 1 and len(outbox) <= outbox.maxsize
        assert "disconnected" in repr(outbox)
        assert not any("failed" in line for line in server.transcript.lines)
        assert server.transcript.lines[-1] == "client 1: closed by the server with 1008 (policy violation) too slow: 4 messages waiting; no close frame received"


async def test_disconnect_closes_a_slow_client_with_1008() -> None:
    """A client that reads late still gets every message sent before the close, in order, then 1008."""
    outboxes: list[Outbox] = []
    async with wslab.start(disconnecting_server(outboxes), compression=None) as server:
        async with connect(server.uri, max_queue=1, compression=None) as ws:
            async with asyncio.timeout(5):
                while not (outboxes and outboxes[0].disconnected):
                    await asyncio.sleep(0.01)
            received = []
            with pytest.raises(ConnectionClosedError) as caught:
                async for message in ws:
                    received.append(message[:4])
        assert caught.value.rcvd is not None and caught.value.rcvd.code == 1008
        assert received == [f"{n:04d}" for n in range(len(received))]  # in order, nothing skipped
        await server.settle()
        assert not any("failed" in line for line in server.transcript.lines)


async def test_when_full_is_checked() -> None:
    async def check(websocket) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(ValueError, match="'drop-oldest' or 'disconnect'"):
            Outbox(websocket, when_full="block")  # type: ignore[arg-type]
        await websocket.send("checked")

    async with wslab.start(check) as server:
        async with connect(server.uri) as ws:
            assert await ws.recv() == "checked"
