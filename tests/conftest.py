"""Shared fixtures: every test leaves no wslab server behind."""

from __future__ import annotations

import os
import shutil
import socket
from typing import Any, AsyncIterator, Iterator

import pytest

import wslab
from wslab.servers import _registry


@pytest.fixture(autouse=True)
def no_server_left_behind() -> Iterator[None]:
    """Fail a test that leaves a running server; stop it so the next test starts clean."""
    yield
    leftovers = list(_registry)
    for server in list(_registry.values()):
        server._stop_soon()
    assert not leftovers, f"servers left running: {leftovers}"


@pytest.fixture
async def playwright() -> AsyncIterator[Any]:
    """Playwright, to drive Debian's Chromium (CHROMIUM); skipped without it here, a failure in CI."""
    require(CHROMIUM is not None, "Chromium (Debian package chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:  # pragma: no cover - requirements.txt installs it
        require(False, "the Python package playwright")
    async with async_playwright() as playwright:
        yield playwright


@pytest.fixture
async def browser(playwright: Any) -> AsyncIterator[Any]:
    """A headless Chromium, closed after the test."""
    browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
    yield browser
    await browser.close()


def open_fds() -> set[int]:
    """File descriptors open in this process (Linux)."""
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def free_port() -> int:
    """A port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require(available: bool, what: str) -> None:
    """Skip with a clear reason when an outside tool is missing here; in CI (CI set), fail instead."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing, and CI must run this test: .ci/run installs it")
    pytest.skip(f"{what} is not installed here (CI installs it: see .ci/run)")


# Debian's Chromium, headless, for the browser tests: never a browser that a test tool downloads. Without the
# background-networking flags it tries to reach Google's hosts at every start.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


async def echo(websocket) -> None:  # type: ignore[no-untyped-def]
    """The handler most tests use."""
    async for message in websocket:
        await websocket.send(message)


__all__ = ["CHROMIUM", "CHROMIUM_FLAGS", "echo", "free_port", "open_fds", "require", "wslab"]
