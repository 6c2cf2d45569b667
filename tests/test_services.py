"""Real redis-server and nginx as child processes: started on loopback, reachable, and gone after stop."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection

import wslab
from wslab import services

from .conftest import require


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) counts as gone
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


@pytest.fixture
def redis_installed() -> None:
    require(shutil.which("redis-server") is not None, "redis-server (Debian package redis-server)")


@pytest.fixture
def nginx_installed() -> None:
    require(shutil.which("nginx") is not None or os.path.exists("/usr/sbin/nginx"), "nginx (Debian package nginx)")


async def test_redis_answers_on_its_unix_socket_and_is_gone_after_stop(redis_installed: None) -> None:
    import redis.asyncio as aioredis

    server = await services.start_redis()
    client = aioredis.from_url(server.url)
    try:
        assert await client.ping() is True
        await client.set("k", "v")
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()
    pid, directory = server.pid, server.directory
    assert alive(pid) and server.socket_path.exists()
    await server.stop()
    assert not alive(pid) and not directory.exists()
    assert "redis" not in wslab.running()


async def test_a_missing_program_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services.shutil, "which", lambda name: None)
    monkeypatch.setattr(services.Path, "exists", lambda self: False)
    with pytest.raises(services.MissingProgram, match="apt-get install redis-server"):
        await services.start_redis()


async def echo_with_client_address(websocket: ServerConnection) -> None:
    forwarded = websocket.request.headers.get("X-Forwarded-For", "none")
    async for message in websocket:
        await websocket.send(f"{message} from {forwarded} via {websocket.local_address[1]}")


async def test_nginx_proxies_websockets_balances_and_reroutes(nginx_installed: None) -> None:
    first = await wslab.start(echo_with_client_address, name="first")
    second = await wslab.start(echo_with_client_address, name="second")
    proxy = await services.start_nginx([first.port, second.port])
    try:
        seen = set()
        for _ in range(4):  # round robin over the two
            async with connect(proxy.uri + "/chat", proxy=None) as ws:
                await ws.send("hi")
                answer = await ws.recv()
                assert answer.startswith("hi from 127.0.0.1 via ")  # X-Forwarded-For names the real client
                seen.add(int(answer.rsplit(" ", 1)[1]))
        assert seen == {first.port, second.port}
        await proxy.route_to([second.port])  # take the first out, as for a draining server
        for _ in range(3):
            async with connect(proxy.uri, proxy=None) as ws:
                await ws.send("again")
                assert (await ws.recv()).endswith(f"via {second.port}")
    finally:
        pid = proxy.pid
        await proxy.stop()
        await first.stop()
        await second.stop()
    assert not alive(pid)


async def test_stop_all_stops_services_too(redis_installed: None, nginx_installed: None) -> None:
    redis_server = await services.start_redis()
    proxy = await services.start_nginx([1])
    names = await wslab.stop_all()
    assert set(names) == {"redis", "nginx"}
    assert not alive(redis_server.pid) and not alive(proxy.pid)


def test_services_are_stopped_when_the_interpreter_exits(redis_installed: None, nginx_installed: None) -> None:
    script = textwrap.dedent(
        """
        import asyncio, wslab
        from wslab import services

        async def main():
            r = await services.start_redis()
            n = await services.start_nginx([1])
            print(r.pid, n.pid, r.directory, flush=True)

        asyncio.run(main())
        """
    )
    done = subprocess.run([sys.executable, "-X", "dev", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    redis_pid, nginx_pid, directory = done.stdout.split()
    assert not alive(int(redis_pid)) and not alive(int(nginx_pid))
    assert not os.path.exists(directory)


def test_need_says_how_to_install_and_skips_the_cells_that_follow(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    monkeypatch.setattr(shell, "input_transformers_post", [])
    assert services.need("sh") is True and capsys.readouterr().out == ""
    monkeypatch.setattr(services.shutil, "which", lambda name: None)
    monkeypatch.setattr(services.Path, "exists", lambda self: False)
    assert services.need("redis-server", "nginx") is False
    out = capsys.readouterr().out
    assert "apt-get install redis-server" in out and "apt-get install nginx" in out
    shell.run_cell("raise RuntimeError('this cell must not run')")
    assert capsys.readouterr().out == "skipped: this cell needs redis-server and nginx (see above)\n"
    InteractiveShell.clear_instance()
