"""Child services never outlive their owner, never collide with another kind, and nginx is really ours.

The faults reproduced: a killed kernel left redis-server, the chat and nginx running (nginx still served); a
kernel shut down normally never ran its exit handlers (the kernel's sweep of its process group waited on our
unreaped children until Jupyter killed it), so directories leaked; a chat process and an in-process chat both
named "chat" stopped each other; nginx counted as started when any program answered its port; the sweep of
dead owners' directories removed a live kernel's in another pid namespace (both were pid 1), and a child made
by ``os.fork()`` removed its parent's directories as it exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
from websockets.asyncio.client import connect

import wslab
from wslab import services
from wslab.chat.server import ChatServer
from wslab.errors import PortInUseError
from wslab.servers import NameTakenError

from .conftest import require
from .test_services import alive

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")

START_ALL_THREE = """
from wslab import services
r = await services.start_redis()
c = await services.start_chat(redis=r.url)
n = await services.start_nginx([c.port])
print(r.pid, c.pid, n.pid, r.directory.parent, flush=True)
"""


@pytest.fixture
def programs() -> None:
    require(shutil.which("redis-server") is not None, "redis-server (Debian package redis-server)")
    require(shutil.which("nginx") is not None or os.path.exists("/usr/sbin/nginx"), "nginx (Debian package nginx)")


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (nginx's workers, say)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


async def gone(pids: list[int], within: float = 10.0) -> list[int]:
    """Wait (bounded) until none of ``pids`` runs; return those still running."""
    deadline = time.monotonic() + within
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return left


def script(code: str) -> list[str]:
    """The command that runs ``code`` (top-level await allowed) in a fresh interpreter.

    ``-W default`` shows every warning (a ResourceWarning, say); not ``-X dev``, whose slow-callback reports
    depend on how busy the machine is.
    """
    body = "import asyncio, wslab.services\nasync def main():\n" + textwrap.indent(code, "    ") + "\nasyncio.run(main())\n"
    return [sys.executable, "-W", "default", "-c", body]


@linux_only
async def test_children_die_with_a_killed_parent_and_the_next_start_removes_its_directory(programs: None) -> None:
    parent = await asyncio.create_subprocess_exec(
        *script(START_ALL_THREE + "await asyncio.Event().wait()"), stdout=asyncio.subprocess.PIPE
    )
    assert parent.stdout is not None
    try:
        async with asyncio.timeout(30):
            *pids, home = (await parent.stdout.readline()).decode().split()
        children = [int(p) for p in pids]
        children += children_of(children[2])  # nginx's worker
        assert len(children) >= 4 and all(alive(p) for p in children) and Path(home).is_dir()
        assert Path(home).name == f"wslab-{services._user()}-{services._pid_namespace()}{parent.pid}"
    finally:
        parent.kill()  # as the out-of-memory killer would: no exit handler runs
        await parent.wait()
    assert await gone(children) == []  # each got SIGTERM from the kernel (its lifeline) and exited
    assert Path(home).is_dir()  # nobody removed it yet: the next start does
    done = await asyncio.to_thread(
        subprocess.run, script("from wslab import services\nredis = await services.start_redis()\nawait redis.stop()"),
        capture_output=True, text=True, timeout=40,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert not Path(home).exists()


@contextlib.asynccontextmanager
async def kernel() -> AsyncIterator[tuple[Any, Any]]:
    """A real Jupyter kernel and a client of it, as JupyterLab starts them; shut down at the end if still alive."""
    from jupyter_client.manager import AsyncKernelManager

    manager = AsyncKernelManager(kernel_name="python3")
    await manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=30)
        yield manager, client
    finally:
        client.stop_channels()
        if await manager.is_alive():
            await manager.shutdown_kernel(now=True)


@linux_only
async def test_a_kernel_shut_down_normally_stops_its_services_and_leaves_no_directory(programs: None, tmp_path: Path) -> None:
    marker = tmp_path / "atexit-ran"
    async with kernel() as (manager, client):
        out = await run(client, f"import atexit, pathlib\natexit.register(pathlib.Path({str(marker)!r}).touch)\n" + START_ALL_THREE)
        *pids, home = out.split()
        children = [int(p) for p in pids]
        await manager.interrupt_kernel()  # Jupyter's interrupt signals the kernel's process group...
        out = await run(client, "print(all(s.running for s in (r, c, n)))")
        assert out == "True\n"  # ...which the services are not in: they keep running
        port = int(await run(client, IN_KERNEL_SERVER))
        async with connect(f"ws://127.0.0.1:{port}", proxy=None) as ws:
            await manager.shutdown_kernel(now=False)
            await ws.wait_closed()
    assert marker.exists()  # the kernel exited by itself, running its exit handlers (before: killed by Jupyter)
    assert ws.close_code == 1001  # chapter 00: "servers are closed quietly when the kernel shuts down"
    assert await gone(children) == []
    assert not Path(home).exists()


async def test_a_kernel_restart_closes_its_servers_with_1001() -> None:
    async with kernel() as (manager, client):
        port = int(await run(client, IN_KERNEL_SERVER))
        async with connect(f"ws://127.0.0.1:{port}", proxy=None) as ws:
            await manager.restart_kernel(now=False)  # the kernel menu's "Restart Kernel"
            await ws.wait_closed()
        assert ws.close_code == 1001


IN_KERNEL_SERVER = """
import wslab

async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)

server = await wslab.start(echo)
print(server.port)
"""


async def run(client, code: str) -> str:  # type: ignore[no-untyped-def]
    """Execute ``code`` in the kernel; its printed output (an error fails the test)."""
    msg_id = client.execute(code)
    out = ""
    async with asyncio.timeout(40):
        while True:
            message = await client.get_iopub_msg()
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            assert kind != "error", content
            if kind == "stream":
                out += content["text"]
            if kind == "status" and content["execution_state"] == "idle":
                return out


HOLD_THE_LOCK = """
import fcntl, sys
owner = open(sys.argv[1], "w")  # opening truncates: a sweep may find the file empty while its owner lives
fcntl.flock(owner, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.readline()
"""


def test_a_directory_is_swept_only_when_no_process_holds_its_lock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    user = services._user()

    def made(name: str) -> Path:
        directory = tmp_path / name
        (directory / "redis-x").mkdir(parents=True)
        (directory / "redis-x" / "redis.sock").write_text("")
        (directory / "owner").write_text("")
        return directory

    held = made(f"wslab-{user}-4026532999-1")  # pid 1 of another namespace: its pid means nothing here
    free = made(f"wslab-{user}-{os.getpid()}")  # a live pid, but nobody holds the lock: its owner is gone
    another_users = made(f"wslab-{user}x-1")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(held / "owner")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        services._remove_dead_owners()
        assert held.exists() and (held / "redis-x" / "redis.sock").exists()
        assert not free.exists() and another_users.exists()
    finally:
        holder.communicate("\n", timeout=10)  # its lock ends with it
    services._remove_dead_owners()
    assert not held.exists() and another_users.exists()


def test_the_directory_of_a_living_process_is_never_swept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(services, "_home_lock", None)  # this process's own directory, made anew in tmp_path
    directory = services._service_directory("probe")
    home = directory.parent
    assert home.name == f"wslab-{services._user()}-{services._pid_namespace()}{os.getpid()}"
    assert (home / "owner").read_text() == f"{os.getpid()}\n"
    sweep = "from wslab import services; services._remove_dead_owners()"
    done = subprocess.run([sys.executable, "-c", sweep], env={**os.environ, "TMPDIR": str(tmp_path)}, capture_output=True, timeout=30)
    assert done.returncode == 0 and done.stderr == b""
    assert directory.is_dir()
    services._remove_directory(directory)
    assert not home.exists() and services._home_lock is None


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path: a unix socket's path must stay under 108 bytes."""
    directory = Path(tempfile.mkdtemp(prefix="t-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


IN_A_PID_NAMESPACE = """
import asyncio, sys
from wslab import services
async def main():
    redis = await services.start_redis()
    print(redis.directory.parent.name, redis.socket_path, flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await redis.stop()
asyncio.run(main())
"""


@linux_only
def test_a_kernel_in_another_pid_namespace_keeps_its_directory(monkeypatch: pytest.MonkeyPatch, short_tmp: Path) -> None:
    require(shutil.which("redis-server") is not None, "redis-server (Debian package redis-server)")
    unshare = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"]
    if shutil.which("unshare") is None or subprocess.run([*unshare, "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare cannot make a pid namespace here (the lock tests above cover the sweep)")
    monkeypatch.setattr(tempfile, "tempdir", str(short_tmp))
    other = subprocess.Popen(
        [*unshare, sys.executable, "-c", IN_A_PID_NAMESPACE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "TMPDIR": str(short_tmp)},
    )
    try:
        assert other.stdout is not None
        name, socket_path = other.stdout.readline().split()
        assert name.endswith("-1") and name != services._owner_directory().name  # pid 1 there, with its namespace
        services._remove_dead_owners()  # a kernel here sweeps...
        assert Path(socket_path).exists() and services._redis_answers(Path(socket_path))  # ...and leaves it alone
    finally:
        other.communicate("\n", timeout=30)
    assert other.returncode == 0 and not (short_tmp / name).exists()


FORKED = """
import asyncio, os, sys, warnings
import wslab
import wslab.services as s
r = asyncio.run(s.start_redis("forked"))
with warnings.catch_warnings(category=DeprecationWarning, action="ignore"):  # 3.12+: "multi-threaded" (the spawner)
    pid = os.fork()
if pid == 0:
    if sys.argv[1] == "stop_all":
        asyncio.run(wslab.stop_all())
    sys.exit(0)  # a forked helper that ends normally: its exit handlers run
os.waitpid(pid, 0)
print(r.running, r.directory.exists(), s._redis_answers(r.socket_path), flush=True)
asyncio.run(r.stop())
print(r.running, r.directory.parent.exists())
"""


@pytest.mark.parametrize("child", ["exits", "stop_all"])
def test_a_forked_child_leaves_the_parents_services_alone(child: str, short_tmp: Path) -> None:
    require(shutil.which("redis-server") is not None, "redis-server (Debian package redis-server)")
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", FORKED, child], capture_output=True, text=True, timeout=40,
        env={**os.environ, "TMPDIR": str(short_tmp)},
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout == "True True True\nFalse False\n"  # before: the child's exit removed the directory
    assert list(short_tmp.iterdir()) == []


async def test_a_chat_process_and_an_in_process_chat_refuse_to_share_a_name() -> None:
    process = await services.start_chat()  # both are named "chat" by default
    try:
        with pytest.raises(NameTakenError, match=r"'chat' is taken by a chat process \(services.start_chat\)"):
            await ChatServer().start()
        assert process.running  # it used to get SIGTERM here
        in_process = await ChatServer().start(name="chat-in-kernel")  # the way out the message names
        await in_process.stop()
    finally:
        await process.stop()
    chat = ChatServer()
    await chat.start()
    homes_before = set(services._owner_directory().glob("chat-*"))
    try:
        with pytest.raises(NameTakenError, match=r"taken by a WebSocket server of this process .* a chat process"):
            await services.start_chat()
        assert set(services._owner_directory().glob("chat-*")) == homes_before
    finally:
        await wslab.stop_all()


async def test_rerunning_a_service_cell_still_replaces_it(programs: None) -> None:
    first = await services.start_redis()
    second = await services.start_redis()
    assert not alive(first.pid) and not first.directory.exists()
    assert wslab.running() == {"redis": ""} and second.running
    await second.stop()


async def test_nginx_is_not_ready_because_another_program_answers_its_port(programs: None, monkeypatch: pytest.MonkeyPatch) -> None:
    async def someone_else(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\nsomeone else's server")
        await writer.drain()
        writer.close()

    theirs = await asyncio.start_server(someone_else, "127.0.0.1", 0)
    taken = theirs.sockets[0].getsockname()[1]
    monkeypatch.setattr(services, "_free_port", lambda: taken)  # the race, made certain: each free port is taken
    try:
        started = time.monotonic()
        with pytest.raises(PortInUseError, match=rf"bind\(\) to 127.0.0.1:{taken} failed \(98: Address already in use\)"):
            await services.start_nginx([9])  # it used to return, and its URL answered "someone else's server"
        assert time.monotonic() - started < 5  # nginx's own retries would take 2.5 s for each port
        assert "nginx" not in wslab.running()
        home = services._owner_directory()
        assert not home.exists() or not list(home.glob("nginx-*"))
    finally:
        theirs.close()
        await theirs.wait_closed()


async def test_nginx_moves_to_another_port_when_its_first_is_taken(programs: None, monkeypatch: pytest.MonkeyPatch) -> None:
    free_port = services._free_port
    holder = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    ports = iter([holder.sockets[0].getsockname()[1]])
    monkeypatch.setattr(services, "_free_port", lambda: next(ports, None) or free_port())
    backend = await wslab.start(echo_path)
    try:
        proxy = await services.start_nginx([backend.port])
        assert proxy.port != holder.sockets[0].getsockname()[1]
        answer = await wslab.http_get(f"http://127.0.0.1:{proxy.port}{services.READY_PATH}")
        assert (answer.status, answer.body) == (200, proxy.token.encode())
        async with connect(proxy.uri + "/through", proxy=None) as ws:
            assert await ws.recv() == "/through"
        await proxy.stop()
    finally:
        await backend.stop()
        holder.close()
        await holder.wait_closed()


async def echo_path(websocket) -> None:  # type: ignore[no-untyped-def]
    await websocket.send(websocket.request.path)
