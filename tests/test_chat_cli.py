"""``python -m wslab.chat``: its help, clear errors for bad arguments, and a process that serves and drains."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from wslab import services
from wslab.chat.client import ChatClient


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wslab.chat", *args], capture_output=True, text=True, timeout=30)


def test_help_lists_the_options() -> None:
    done = run("--help")
    assert done.returncode == 0
    for option in ("--host", "--port", "--redis", "--token", "--ttl", "--ping-interval", "--drain-grace", "--trusted-proxy"):
        assert option in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "http"], "argument --port: expected a port from 0 (any free port) to 65535, got 'http'"),
        (["--port", "70000"], "expected a port from 0 (any free port) to 65535, got '70000'"),
        (["--redis", "localhost:6379"], "argument --redis: expected a URL such as redis://127.0.0.1:6379/0"),
        (["--ttl", "0"], "argument --ttl: expected a number of seconds above 0, got '0'"),
        (["--ping-interval", "soon"], "expected a number of seconds, got 'soon'"),
        (["--colour", "red"], "unrecognized arguments: --colour red"),
    ],
)
def test_a_bad_argument_gets_one_clear_line_and_status_2(args: list[str], message: str) -> None:
    done = run(*args)
    assert done.returncode == 2 and done.stdout == ""
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_taken_port_is_a_one_line_error() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        done = run("--port", str(sock.getsockname()[1]))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "error: cannot listen on 127.0.0.1:" in done.stderr


async def test_the_process_serves_then_drains_on_sigterm() -> None:
    chat = await services.start_chat("cli-chat", args=["--drain-grace", "0.1"])
    try:
        async with ChatClient(chat.uri, proxy=None) as ada:
            await ada.join("lobby", "ada")
            chat.terminate()
            assert await ada.recv() == {"v": 1, "type": "closing", "code": 1012, "reason": "service restart"}
            await ada.ws.wait_closed()
            assert ada.ws.close_code == 1012
        assert await chat.wait() == 0
        assert "draining" in chat.log() and chat.log().endswith("stopped\n")
    finally:
        await chat.stop()


def test_a_redis_that_cannot_be_reached_is_a_one_line_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    done = run("--redis", f"unix://{tmp_path}/no-redis.sock")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: cannot reach Redis at unix://{tmp_path}/no-redis.sock: Redis is unreachable")


async def test_sigterm_with_redis_paused_drains_and_exits_before_it_would_be_killed() -> None:
    from .conftest import require
    from .test_chat_bus_faults import paused

    require(shutil.which("redis-server") is not None, "redis-server (Debian package redis-server)")
    redis = await services.start_redis("cli-redis")
    chat = await services.start_chat("cli-chat", redis=redis.url)
    try:
        async with ChatClient(chat.uri, proxy=None) as ada:
            await ada.join("lobby", "ada")
            with paused(redis):  # Redis accepts and never answers: every step of the drain must be bounded
                await ada.say("while paused")
                chat.terminate()
                assert await chat.wait(services.STOP_TIMEOUT) == 0  # before: 15 s, so stop() had to kill it
        assert "error unavailable" in chat.log() and chat.log().endswith("stopped\n")
    finally:
        await chat.stop()
        await redis.stop()
