"""Chapter 07's check: a Stream follower passes only if it resumes from the last id it was given."""

from __future__ import annotations

import shutil

import pytest

from wslab import check

from .conftest import require


@pytest.fixture(autouse=True)
def redis_installed() -> None:
    require(shutil.which("redis-server") is not None, "redis-server (Debian package redis-server)")


async def follow(r, key, last):  # type: ignore[no-untyped-def]
    texts = []
    for _, entries in await r.xread({key: last}):
        for entry_id, fields in entries:
            texts.append(fields[b"text"].decode())
            last = entry_id
    return texts, last


async def from_the_start(r, key, last):  # type: ignore[no-untyped-def]
    return await follow(r, key, "0-0")


async def forgets_the_id(r, key, last):  # type: ignore[no-untyped-def]
    texts, _ = await follow(r, key, last)
    return texts, last


async def test_the_solution_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert await check.follow_stream(follow)
    assert capsys.readouterr().out.startswith("PASS: follow_stream")


@pytest.mark.parametrize("wrong", [from_the_start, forgets_the_id])
async def test_a_follower_that_rereads_fails_with_a_hint(wrong, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert not await check.follow_stream(wrong)
    assert "hint: read from the last id you were given" in capsys.readouterr().out


async def test_a_plain_function_fails() -> None:
    assert not await check.follow_stream(lambda r, key, last: ([], last))


def ghost_window(ttl):  # type: ignore[no-untyped-def]
    return ttl - ttl / 3, ttl + ttl / 2


async def test_the_ghost_window_passes_and_a_real_kill_falls_inside_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert await check.ghost_window(ghost_window)
    assert capsys.readouterr().out.startswith("PASS: ghost_window")


async def test_the_bus_keeps_its_promise_measured() -> None:
    from wslab.check.ch07 import SLACK, _time_a_ghost, _window

    earliest, latest = _window(1.0)
    assert earliest - 0.05 <= await _time_a_ghost(1.0) <= latest + SLACK


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (lambda ttl: (ttl - ttl / 3, ttl), "the key expires at most ttl after the kill, but someone must notice"),  # forgets the reaper
        (lambda ttl: (0, 100), "latest: the key outlives the kill by at most ttl"),  # a window that says nothing
        (lambda ttl: (ttl, ttl + ttl / 2), "earliest: the last beat may have come up to ttl / 3 before"),
        (lambda ttl: ttl * 1.5, "return a pair of numbers"),
    ],
)
async def test_a_wrong_window_fails_with_a_hint_before_anything_starts(wrong, hint, capsys) -> None:  # type: ignore[no-untyped-def]
    assert not await check.ghost_window(wrong)
    assert hint in capsys.readouterr().out.split("hint: ", 1)[1]


async def test_a_coroutine_function_is_not_a_window(capsys: pytest.CaptureFixture[str]) -> None:
    async def window(ttl):  # type: ignore[no-untyped-def]
        return ghost_window(ttl)

    assert not await check.ghost_window(window)
    assert "pass a plain function" in capsys.readouterr().out
