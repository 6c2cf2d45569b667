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
