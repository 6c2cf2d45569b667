"""Checks where learners really run them: a hub whose environment names a proxy, and code that blocks the loop.

Every check passes its reference solution with ``http_proxy`` set (the check's own clients never use a proxy);
a learner's client that follows the proxy gets a hint naming it and the fix; a check whose handler blocks the
event loop returns as soon as the loop is free and says how long it was blocked.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from wslab import check, faults

from . import test_chat_checks as ch05
from . import test_check as base
from . import test_check_ch03 as ch03
from . import test_check_ch04 as ch04
from . import test_check_ch07 as ch07
from .conftest import require

REFERENCE: dict[str, Any] = {
    "shout": base.shout_ok,
    "shout_count": base.count_ok,
    "binary_echo": base.binary_ok,
    "two_fragments": base.fragments_ok,
    "long_ping": base.ping_ok,
    "names": base.NamedOk,
    "rooms_endpoint": base.RoomsOk,
    "announcements": base.AnnouncingOk,
    "first_five": base.first_five_ok,
    "give_up_after": base.give_up_ok,
    "resume": base.resume_ok,
    "follow": ch03.follow_ok,
    "silent_server": base.silent_ok,
    "auth_deadline": base.auth_with(0.2),
    "slow_down": base.slow_down_ok,
    "polite_client": ch04.polite(0.2),
    "who": ch05.WhoChat,
    "typing": ch05.TypingChat,
    "whisper": ch05.WhisperChat,
    "no_disguise": ch05.NoDisguiseChat,
    "max_size_test": base.max_size_ok,
    "going_away": base.going_away_ok,
    "percentiles": base.percentiles_ok,
    "follow_stream": ch07.follow,
    "ghost_window": ch07.ghost_window,
}
NEEDS_REDIS = {"follow_stream", "ghost_window"}
PROXY_HINT = "hint: your client never reached the check's server: connect() went to the proxy"


def test_every_check_has_a_reference_solution_here() -> None:
    assert sorted(REFERENCE) == sorted(check.__all__[1:])


@pytest.mark.parametrize("name", sorted(REFERENCE))
async def test_every_check_passes_its_reference_solution_with_a_proxy_in_the_environment(name: str) -> None:
    if name in NEEDS_REDIS:
        require(shutil.which("redis-server") is not None, "redis-server (Debian package redis-server)")
    with faults.proxy_in_environment():
        verdict = await getattr(check, name)(REFERENCE[name])
    assert verdict, verdict.text


# The saved solutions as a learner writes them on a laptop: plain connect(uri), which follows the proxy.


async def first_five_plain(uri: str) -> list[str]:
    seen = []
    async with connect(uri) as websocket:
        async for message in websocket:
            seen.append(message)
            if len(seen) == 5:
                break
    return seen


async def follow_plain(uri: str, wanted: int) -> list[int]:
    last, seen = 0, []
    async for websocket in connect(uri):
        try:
            await websocket.send(str(last))
            async for message in websocket:
                last = int(message)
                seen.append(last)
                if len(seen) == wanted:
                    return seen
        except ConnectionClosed:
            continue
    return seen


async def polite_plain(uri: str, messages: list[str]) -> list[str]:
    echoes: list[str] = []
    while len(echoes) < len(messages):
        try:
            async with connect(uri) as websocket:
                for message in messages[len(echoes) :]:
                    await websocket.send(message)
                    echoes.append(await websocket.recv())
        except ConnectionClosedError as error:
            if error.rcvd is None or error.rcvd.code != 4029:
                raise
            await asyncio.sleep(0.2)
    return echoes


async def max_size_plain(uri: str) -> None:
    async with connect(uri) as ws:
        await ws.send("x" * 2_000_000)
        try:
            async with asyncio.timeout(0.5):
                await ws.recv()
        except ConnectionClosedError as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1009
        else:
            raise AssertionError("the server answered instead of closing with 1009")


PLAIN = [
    (check.first_five, first_five_plain, "got: ConnectionRefusedError"),
    (check.follow, follow_plain, "the client resumed from []"),  # the reconnect loop retries the proxy until 3 s
    (check.polite_client, polite_plain, "got: ConnectionRefusedError"),
    (check.max_size_test, max_size_plain, "got: ConnectionRefusedError"),
]


@pytest.mark.parametrize(("run_check", "client", "got"), PLAIN, ids=[c.__name__ for _, c, _ in PLAIN])
async def test_a_learner_client_that_follows_the_proxy_gets_the_proxy_hint(run_check: Any, client: Any, got: str) -> None:
    with faults.proxy_in_environment() as proxy:
        verdict = await run_check(client)
    assert not verdict
    assert got in verdict.text, verdict.text
    assert PROXY_HINT in verdict.text and f"({proxy}:" in verdict.text, verdict.text
    assert "pass proxy=None to connect()" in verdict.text and "chapter 03" in verdict.text
    assert "your code raised" not in verdict.text and verdict.text.count("hint: ") == 1


async def test_with_the_proxy_set_a_client_that_reached_the_server_keeps_its_own_hint() -> None:
    with faults.proxy_in_environment():
        verdict = await check.first_five(base.first_five_four)  # proxy=None, but returns four messages
    assert not verdict and "after the fifth" in verdict.text and "proxy" not in verdict.text, verdict.text


async def test_with_the_proxy_set_a_wrong_handler_keeps_its_own_hint() -> None:
    with faults.proxy_in_environment():
        verdict = await check.shout(base.shout_echo)
    assert not verdict and "not the message itself" in verdict.text and "proxy" not in verdict.text, verdict.text


async def test_without_a_proxy_a_client_that_cannot_connect_keeps_its_own_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("http_proxy", "https_proxy", "ws_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "WS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)

    async def wrong_port(uri: str) -> list[str]:
        return await first_five_plain("ws://127.0.0.1:9")

    verdict = await check.first_five(wrong_port)
    assert not verdict and "your code raised this exception" in verdict.text and "proxy" not in verdict.text


async def test_with_the_proxy_set_a_client_that_fails_before_connecting_keeps_its_own_error() -> None:
    async def typo(uri: str) -> list[str]:
        raise NameError("name 'conect' is not defined")

    with faults.proxy_in_environment():
        verdict = await check.first_five(typo)
    assert not verdict and "got: NameError" in verdict.text and "your code raised" in verdict.text, verdict.text
    assert "proxy" not in verdict.text


# A blocked event loop: the check cannot interrupt it, but it ends at once when the loop is free, and says why.


def sleeping_shout(seconds: float) -> Any:
    async def shout(websocket: Any) -> None:
        async for message in websocket:
            time.sleep(seconds)  # the chapter-00 mistake, inside an exercise
            await websocket.send(message.upper())

    return shout


def blocked_for(text: str) -> float:
    found = re.search(r"hint: the event loop was blocked for (\d+\.\d) s: a time\.sleep or other blocking call", text)
    assert found, text
    assert "use await asyncio.sleep or asyncio.to_thread (chapter 00)" in text and text.count("hint: ") == 1, text
    return float(found.group(1))


@pytest.mark.parametrize("seconds", [1.5, 6.0])  # a message's STEP (1 s) overrun, then the whole TIMEOUT (5 s)
async def test_a_blocking_handler_fails_with_the_blocked_time_as_soon_as_the_loop_is_free(seconds: float) -> None:
    started = time.monotonic()
    verdict = await check.shout(sleeping_shout(seconds))
    took = time.monotonic() - started
    assert not verdict
    assert seconds - 0.1 <= blocked_for(verdict.text) <= took
    assert took < seconds + 1.5, f"the check went on for {took - seconds:.1f} s after the loop was free"
    assert "is something waiting forever" not in verdict.text and "send back message.upper()" not in verdict.text
    assert "server: " not in verdict.text  # its send after the block found the check gone: a consequence, not a mistake


async def test_a_short_block_is_not_blamed_and_the_check_passes() -> None:
    verdict = await check.shout(sleeping_shout(0.2))
    assert verdict, verdict.text


async def test_a_handler_that_waits_without_blocking_gets_the_waiting_hint() -> None:
    async def never_answers(websocket: Any) -> None:
        async for _ in websocket:
            await asyncio.Event().wait()

    verdict = await check.shout(never_answers)
    assert not verdict and "the client got nothing in 1 s" in verdict.text and "blocked" not in verdict.text, verdict.text



async def test_with_the_proxy_set_a_wrong_port_is_not_blamed_on_the_proxy() -> None:
    async def wrong_port(uri: str) -> list[str]:
        async with connect("ws://127.0.0.1:1", proxy=None):  # no proxy, and a port nothing listens on
            return []

    with faults.proxy_in_environment():
        verdict = await check.first_five(wrong_port)
    assert not verdict and "('127.0.0.1', 1)" in verdict.text and "your code raised" in verdict.text, verdict.text
    assert PROXY_HINT not in verdict.text


async def test_a_socks_proxy_without_python_socks_gets_the_proxy_hint() -> None:
    with faults.proxy_in_environment("socks5h://127.0.0.1:9", ["socks_proxy"]) as proxy:
        verdict = await check.first_five(first_five_plain)
    assert not verdict and "got: ImportError" in verdict.text and "python-socks" in verdict.text, verdict.text
    assert PROXY_HINT in verdict.text and f"({proxy}:" in verdict.text and "socks_proxy" in verdict.text


async def test_a_proxy_named_by_host_that_does_not_resolve_gets_the_proxy_hint() -> None:
    with faults.proxy_in_environment("http://proxy.invalid:3128") as proxy:
        verdict = await check.first_five(first_five_plain)
    assert not verdict and "got: gaierror" in verdict.text, verdict.text
    assert PROXY_HINT in verdict.text and f"({proxy}:" in verdict.text, verdict.text
