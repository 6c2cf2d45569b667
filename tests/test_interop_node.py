"""Interop with another implementation: node's `ws` library as client and as server."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import wslab

from .conftest import echo, require

HERE = Path(__file__).parent / "interop"
ROOT = Path(__file__).parent.parent
NODE = shutil.which("node")


@pytest.fixture(scope="session", autouse=True)
def node_and_ws() -> None:
    """Node, and the npm package ws: `npm ci` installs it into the project when it is missing."""
    require(NODE is not None, "node")
    if (ROOT / "node_modules" / "ws").is_dir():
        return
    npm = shutil.which("npm")
    require(npm is not None, "npm (it installs the node package ws)")
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"`npm ci` failed:\n{done.stdout}{done.stderr}"


async def run_node_client(uri: str, *args: str) -> list[dict]:
    process = await asyncio.create_subprocess_exec(
        NODE, str(HERE / "ws_client.mjs"), uri, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(15):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return [json.loads(line) for line in out.decode().splitlines()]


async def test_ws_client_against_our_server() -> None:
    server = await wslab.start(echo)
    events = await run_node_client(server.uri + "/interop", "4000", "done")
    await server.wait_idle()
    await server.stop()
    assert events == [
        {"event": "open", "protocol": ""},
        {"event": "message", "binary": False, "data": "héllo, wörld"},
        {"event": "message", "binary": True, "data": [0, 1, 2, 255]},
        {"event": "close", "code": 4000, "reason": "done"},
    ]
    assert server.transcript.lines == [
        "client 1: connected to /interop",
        # `async for` ends quietly only on 1000 and 1001, so the echo handler sees 4000 as an error
        "client 1: connection handler failed: ConnectionClosedError: "
        "received 4000 (private use) done; then sent 4000 (private use) done",
        "client 1: closed 4000 (private use) done",
    ]


async def test_ws_client_sees_our_server_close_with_1001_on_stop() -> None:
    server = await wslab.start(echo)
    process = await asyncio.create_subprocess_exec(
        NODE, "-e", _HOLDING_CLIENT, server.uri, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(15):
        assert (await process.stdout.readline()).strip() == b"open"  # type: ignore[union-attr]
        await server.stop()
        out, err = await process.communicate()
    assert json.loads(out) == {"code": 1001, "reason": ""}, err.decode()


_HOLDING_CLIENT = """
const { WebSocket } = require("ws");
const ws = new WebSocket(process.argv[1]);
ws.on("open", () => console.log("open"));
ws.on("close", (code, reason) => console.log(JSON.stringify({ code, reason: reason.toString() })));
"""


class NodeServer:
    """The `ws` echo server in a node process."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process, self.uri = process, f"ws://127.0.0.1:{port}"

    async def events(self) -> list[dict]:
        """Wait until the server has seen a connection close, stop it, and return what it logged."""
        assert self.process.stdin is not None and self.process.stdout is not None
        events: list[dict] = []
        async with asyncio.timeout(10):
            while not events or events[-1]["event"] != "close":
                events.append(json.loads(await self.process.stdout.readline()))
            self.process.stdin.close()
            out, _ = await self.process.communicate()
        return events + [json.loads(line) for line in out.decode().splitlines()]


@pytest.fixture
async def node_server():  # type: ignore[no-untyped-def]
    process = await asyncio.create_subprocess_exec(
        NODE, str(HERE / "ws_server.mjs"), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    async with asyncio.timeout(10):
        port = json.loads(await process.stdout.readline())["port"]
    server = NodeServer(process, port)
    yield server
    if process.returncode is None:
        process.kill()
        await process.wait()


async def test_our_client_against_a_ws_server_text_and_binary(node_server: NodeServer) -> None:
    async with connect(node_server.uri + "/from-python") as ws:
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        await ws.send(b"\x00\x01\xff")
        assert await ws.recv() == b"\x00\x01\xff"  # binary stays bytes
    assert await node_server.events() == [
        {"event": "open", "path": "/from-python"},
        {"event": "close", "code": 1000, "reason": ""},
    ]


@pytest.mark.parametrize(("code", "reason", "clean"), [(1000, "bye", True), (1001, "going", True), (1011, "oops", False), (4001, "custom", False)])
async def test_our_client_sees_each_close_code_from_a_ws_server(
    node_server: NodeServer, code: int, reason: str, clean: bool
) -> None:
    async with connect(node_server.uri) as ws:
        await ws.send(f"close {code} {reason}")
        received = []
        try:
            async for message in ws:  # ends quietly on 1000 and 1001 only
                received.append(message)
            ended_quietly = True
        except ConnectionClosed:
            ended_quietly = False
        assert (ws.close_code, ws.close_reason, ended_quietly) == (code, reason, clean)
        assert received == []
    events = await node_server.events()
    assert events[-1] == {"event": "close", "code": code, "reason": reason}
