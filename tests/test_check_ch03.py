"""Chapter 03 (client): each failure the chapter describes, produced for real; its checks refuse a crashing handler."""

from __future__ import annotations

import ast
import asyncio
import json
import re
import signal
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConcurrencyError, ConnectionClosed, ConnectionClosedOK

import wslab
from wslab import check, faults
from wslab.frames import Opcode, accept_key, encode_frame, read_frame

from .conftest import echo

ROOT = Path(__file__).parent.parent
SANS_IO = re.compile(r"^\s*(from websockets\.(client|server) import|import websockets\.(client|server)\b)", re.M)


async def counting_forever(websocket) -> None:  # type: ignore[no-untyped-def]
    n = int(await websocket.recv())
    while True:  # never catches ConnectionClosed: it crashes when the client leaves or the server stops
        n += 1
        await websocket.send(str(n))
        await asyncio.sleep(0.01)


async def test_resume_fails_a_handler_that_crashes_when_the_connection_closes(capsys) -> None:  # type: ignore[no-untyped-def]
    verdict = await check.resume(counting_forever)
    out = capsys.readouterr().out
    assert not verdict, out
    assert "a handler must end cleanly" in out and "ConnectionClosed" in out, out


def code_of(notebook: Path) -> str:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


@pytest.mark.parametrize(
    "path",
    [ROOT / "src/wslab/check/ch03.py", ROOT / "notebooks/03-client.ipynb", ROOT / "solutions/03-solutions.ipynb"],
    ids=lambda p: p.name,
)
def test_chapter_03_never_imports_the_sans_io_modules(path: Path) -> None:
    source = code_of(path) if path.suffix == ".ipynb" else path.read_text(encoding="utf-8")
    assert not SANS_IO.search(source), SANS_IO.search(source)
    assert "backoff" not in source  # undocumented: the chapter writes its own delays


def test_the_check_module_parses_without_sans_io_names() -> None:
    tree = ast.parse((ROOT / "src/wslab/check/ch03.py").read_text(encoding="utf-8"))
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "websockets.client" not in modules and "websockets.server" not in modules


async def test_two_readers_at_once_the_second_gets_concurrency_error() -> None:
    async with wslab.start(echo) as server, connect(server.uri, proxy=None) as ws:
        readers = [asyncio.create_task(ws.recv()) for _ in range(2)]
        await ws.send("one")
        first, second = await asyncio.gather(*readers, return_exceptions=True)
    assert first == "one"
    assert isinstance(second, ConcurrencyError)


async def tick(websocket) -> None:  # type: ignore[no-untyped-def]
    n = 0
    while True:
        n += 1
        await websocket.send(f"tick {n}")
        await asyncio.sleep(0.05)  # more than max_queue unread echoes would hold the closing handshake


async def test_a_task_group_waits_for_a_sender_that_never_ends() -> None:
    async with wslab.start(echo) as server, connect(server.uri, proxy=None) as ws:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                async with asyncio.TaskGroup() as group:
                    group.create_task(tick(ws))
                    listener = group.create_task(ws.recv())
        assert listener.result() == "tick 1"  # done long before the group gave up


async def test_a_failing_task_reaches_the_caller_as_an_exception_group() -> None:
    async def add_numbers(ws) -> None:  # type: ignore[no-untyped-def]
        async for message in ws:
            int(message)

    async with wslab.start(echo) as server, connect(server.uri, proxy=None) as ws:
        with pytest.raises(ExceptionGroup) as caught:
            async with asyncio.TaskGroup() as group:
                group.create_task(tick(ws))
                group.create_task(add_numbers(ws))
    assert [type(e) for e in caught.value.exceptions] == [ValueError]


async def test_asyncio_wait_first_completed_lets_the_sender_be_cancelled() -> None:
    async with wslab.start(echo) as server, connect(server.uri, proxy=None) as ws:
        sender = asyncio.create_task(tick(ws))
        receiver = asyncio.create_task(ws.recv())
        done, pending = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    assert done == {receiver} and sender.cancelled()


async def test_a_forgotten_sender_fails_once_the_connection_has_closed() -> None:
    async with wslab.start(echo) as server:
        async with connect(server.uri, proxy=None) as ws:
            forgotten = asyncio.create_task(tick(ws))
            await ws.recv()
        with pytest.raises(ConnectionClosedOK):
            await asyncio.wait_for(forgotten, 2)


async def empty_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    request = (await reader.readuntil(b"\r\n\r\n")).decode()
    key = re.search(r"(?im)^sec-websocket-key: *(\S+)", request).group(1)  # type: ignore[union-attr]
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode()
    )
    writer.write(encode_frame(Opcode.TEXT, b"bye") + encode_frame(Opcode.CLOSE, b""))
    await read_frame(reader)
    writer.close()


async def test_async_for_ends_quietly_on_an_empty_close_frame_1005() -> None:
    async with await asyncio.start_server(empty_close, "127.0.0.1", 0) as bare:
        port = bare.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/", proxy=None) as ws:
            got = [message async for message in ws]
    assert got == ["bye"]
    assert ws.close_code == 1005


async def test_the_reconnect_loop_retries_handshake_timeouts() -> None:
    failures: list[str] = []

    def note(exc: Exception) -> Exception | None:
        failures.append(type(exc).__name__)
        return None

    def quick():  # type: ignore[no-untyped-def]
        while True:
            yield 0.01

    async with faults.silent_server() as port:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.6):
                async for _ in connect(f"ws://127.0.0.1:{port}/", open_timeout=0.1, proxy=None, reconnect_delays=quick, process_exception=note):
                    pass
    assert len(failures) > 1 and set(failures) == {"TimeoutError"}


OLD_SCRIPT = """\
import asyncio
import websockets

async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)

start_server = websockets.serve(echo, "127.0.0.1", 8765)
asyncio.get_event_loop().run_until_complete(start_server)
asyncio.get_event_loop().run_forever()
"""

NEW_SCRIPT = """\
import asyncio
import signal
from websockets.asyncio.server import serve

async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)

async def main():
    async with serve(echo, "127.0.0.1", 0) as server:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, server.close)
        print(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/", flush=True)
        await server.serve_forever()
    print("closed", flush=True)

asyncio.run(main())
"""


async def run_python(script: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )


async def test_a_module_level_serve_script_fails_with_no_running_event_loop(tmp_path: Path) -> None:
    script = tmp_path / "old_server.py"
    script.write_text(OLD_SCRIPT)
    process = await run_python(script)
    output = (await asyncio.wait_for(process.communicate(), 20))[0].decode()
    assert process.returncode == 1
    assert output.rstrip().endswith("RuntimeError: no running event loop"), output


@pytest.mark.skipif(sys.platform == "win32", reason="loop.add_signal_handler is Unix only")
async def test_the_modern_script_serves_and_shuts_down_on_sigterm(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(NEW_SCRIPT)
    process = await run_python(script)
    try:
        async with asyncio.timeout(20):
            uri = (await process.stdout.readline()).decode().strip()  # type: ignore[union-attr]
            async with connect(uri, proxy=None) as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
                process.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
            assert ws.close_code == 1001
            rest = (await process.communicate())[0].decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert rest.strip() == "closed" and process.returncode == 0


async def test_unread_messages_beyond_max_queue_hold_the_closing_handshake_for_close_timeout() -> None:
    """Why the chapter's TaskGroup demo ticks slowly: a client that leaves its queue full reads no close frame."""
    sent = asyncio.Event()

    async def flood(websocket) -> None:  # type: ignore[no-untyped-def]
        for n in range(40):  # more than max_queue (16 frames by default)
            await websocket.send(f"message {n}")
        sent.set()
        await websocket.wait_closed()

    async with wslab.start(flood) as server:
        loop = asyncio.get_running_loop()
        async with connect(server.uri, proxy=None, close_timeout=0.5) as ws:
            await sent.wait()
            started = loop.time()
        assert loop.time() - started >= 0.4  # the close waited for close_timeout
        assert ws.close_code == 1006  # and ended without a clean closing handshake


@pytest.mark.parametrize(("variable", "used"), [("http_proxy", True), ("https_proxy", True), ("ws_proxy", True), ("all_proxy", False)])
async def test_which_proxy_variables_connect_follows(variable: str, used: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "ws_proxy", "wss_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv(variable, "http://127.0.0.1:9")  # nothing listens there
    async with wslab.start(echo) as server:
        if used:
            with pytest.raises(OSError):
                async with connect(server.uri, open_timeout=2):
                    pass
        else:
            async with connect(server.uri, open_timeout=2) as ws:
                await ws.send("direct")
                assert await ws.recv() == "direct"


async def follow_ok(uri, wanted):  # type: ignore[no-untyped-def]
    last, seen = 0, []
    async for websocket in connect(uri, proxy=None):
        try:
            await websocket.send(str(last))
            async for message in websocket:
                last = int(message)
                seen.append(last)
                if len(seen) == wanted:
                    return seen
        except ConnectionClosed:
            continue


async def follow_without_except(uri, wanted):  # type: ignore[no-untyped-def]
    last, seen = 0, []
    async for websocket in connect(uri):
        await websocket.send(str(last))
        async for message in websocket:
            last = int(message)
            seen.append(last)
            if len(seen) == wanted:
                return seen


async def follow_from_zero(uri, wanted):  # type: ignore[no-untyped-def]
    """Sends "0" after every reconnect: the server starts over, and numbers repeat."""
    seen = []
    async for websocket in connect(uri):
        try:
            await websocket.send("0")
            async for message in websocket:
                seen.append(int(message))
                if len(seen) == wanted:
                    return seen
        except ConnectionClosed:
            continue


async def test_follow_passes_a_client_that_resumes_and_fails_the_usual_mistakes(capsys) -> None:  # type: ignore[no-untyped-def]
    from .test_check import expect_fail, expect_pass

    await expect_pass(check.follow(follow_ok), capsys)
    await expect_pass(check.follow(follow_ok, wanted=5), capsys)
    await expect_fail(check.follow(follow_without_except), capsys, "catch ConnectionClosed inside", "ConnectionClosedError")
    await expect_fail(check.follow(follow_from_zero), capsys, "got: [1, 2, 3, 1, 2, 3, 1]")
