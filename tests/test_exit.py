"""Servers still running when the interpreter exits are closed properly and quietly."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time

from websockets.asyncio.client import connect

from wslab import faults
from wslab.frames import Opcode, parse_close, read_frame, upgrade_request

# The child process starts a server, prints its port, and exits when its stdin says so.
PREAMBLE = """
import asyncio, sys, wslab

async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)
"""
ON_AN_OPEN_LOOP = """
loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
server = loop.run_until_complete(wslab.start(echo))
print(server.port, flush=True)
loop.run_until_complete(loop.run_in_executor(None, sys.stdin.readline))  # the loop serves meanwhile
"""
IN_A_THREAD = """
server = wslab.start_in_thread(echo)
print(server.port, flush=True)
sys.stdin.readline()
"""


async def child(script: str) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "dev", "-c", PREAMBLE + textwrap.dedent(script),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(10):
        port = int(await process.stdout.readline())
    return process, port


async def exit_child(process: asyncio.subprocess.Process) -> str:
    """Tell the child to exit; return its stderr."""
    assert process.stdin is not None and process.stderr is not None
    process.stdin.write(b"exit\n")
    await process.stdin.drain()
    async with asyncio.timeout(10):
        stderr = await process.stderr.read()
        assert await process.wait() == 0, stderr.decode()
    return stderr.decode()


async def test_clients_get_1001_when_the_interpreter_exits() -> None:
    for script in (ON_AN_OPEN_LOOP, IN_A_THREAD):
        process, port = await child(script)
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            stderr = await exit_child(process)
            await ws.wait_closed()
        assert ws.close_code == 1001  # a proper close frame, not a dropped connection
        assert stderr == ""  # no "Task was destroyed but it is pending", no ResourceWarning


async def test_a_client_that_never_answers_the_close_does_not_hold_up_the_exit() -> None:
    process, port = await child(IN_A_THREAD)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(f"127.0.0.1:{port}"))
    await reader.readuntil(b"\r\n\r\n")
    started = time.monotonic()
    stderr = await exit_child(process)  # we read the close frame below, but never answer it
    assert time.monotonic() - started < 5  # websockets would wait 10 s; wslab gives 1 s at exit
    close = await read_frame(reader)
    assert (close.opcode, parse_close(close.payload)[0]) == (Opcode.CLOSE, 1001)
    assert stderr == ""
    writer.close()


async def test_a_server_whose_loop_ended_leaves_no_socket_behind() -> None:
    process, _ = await child("""
        async def main():
            server = await wslab.start(echo)
            print(server.port, flush=True)
        asyncio.run(main())
        sys.stdin.readline()
    """)
    assert await exit_child(process) == ""  # no "unclosed socket" ResourceWarning


async def test_a_client_that_stopped_reading_does_not_hold_up_the_exit() -> None:
    """20 MB unsent to a client that never reads: the exit still takes about the 1 s close timeout."""
    flood = """
        from websockets.asyncio.server import broadcast

        async def flood(websocket):
            for _ in range(200):
                broadcast([websocket], "x" * 100_000)
            await websocket.wait_closed()
    """
    for script in (ON_AN_OPEN_LOOP, IN_A_THREAD):
        process, port = await child(textwrap.dedent(flood) + textwrap.dedent(script).replace("(echo)", "(flood)"))
        async with faults.stalled_client(f"ws://127.0.0.1:{port}"):
            await asyncio.sleep(0.2)  # let the flood fill the buffers
            started = time.monotonic()
            stderr = await exit_child(process)
            took = time.monotonic() - started
        assert took < 1 + 1.5, f"the exit took {took:.1f} s"
        assert stderr == ""
