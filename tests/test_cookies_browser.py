"""Which pages get a server's cookie with their WebSocket handshake, in a real browser (headless Chromium).

Chapter 04 says: Chromium treats a cookie without ``SameSite`` as ``Lax`` and leaves it out of a handshake that
a page of another *site* starts; a page on another port of the same host is the same site and gets it, even a
``Strict`` one; a ``SameSite=None`` cookie crosses sites once third-party cookies are allowed (a new profile
blocks them). Only the ``Origin`` header tells every foreign page apart: the ``origins`` allow-list refuses them.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest

import wslab

from .conftest import CHROMIUM, CHROMIUM_FLAGS

OPEN_SOCKET = """<!doctype html><title>waiting</title><script>
const ws = new WebSocket(new URLSearchParams(location.search).get("to"));
ws.onmessage = (event) => document.title = "got " + event.data;
ws.onclose = (event) => { if (document.title === "waiting") document.title = "closed " + event.code; };
</script>"""


def pages(cookie: str):  # type: ignore[no-untyped-def]
    """A site's HTTP side: ``/login`` sets ``cookie``, ``/page?to=ws://...`` opens a WebSocket there."""

    def respond(connection: Any, request: Any) -> Any:
        if request.path == "/login":
            response = connection.respond(HTTPStatus.OK, "logged in\n")
            response.headers["Set-Cookie"] = cookie
            return response
        response = connection.respond(HTTPStatus.OK, OPEN_SOCKET)
        del response.headers["Content-Type"]  # respond() says text/plain; assigning would add a second one
        response.headers["Content-Type"] = "text/html; charset=utf-8"
        return response

    return respond


async def only_pages(websocket: Any) -> None:  # the page servers never take a WebSocket
    await websocket.close()


async def welcome(websocket: Any) -> None:
    await websocket.send("welcome")


async def handshakes(
    playwright: Any, profile: Path, cookie: str, from_pages: list[str]
) -> list[tuple[str, str | None, str]]:
    """Log in on localhost, open the WebSocket from each page; (Origin, Cookie, what the page saw) per page.

    The app's pages are on one port, its WebSocket server on another (cookies ignore ports), and it accepts
    only its own pages' origin. ``from_pages`` names the other pages as "host" ("localhost", "127.0.0.1").
    """
    seen: list[tuple[str, str | None]] = []

    def record(connection: Any, request: Any) -> None:  # runs before the origin check, so it sees refusals too
        seen.append((request.headers.get("Origin"), request.headers.get("Cookie")))

    app = await wslab.start(only_pages, name="app-pages", process_request=pages(cookie))
    other = await wslab.start(only_pages, name="other-pages", process_request=pages(cookie))
    own_origin = f"http://localhost:{app.port}"
    socket = await wslab.start(welcome, name="app-socket", origins=[own_origin], process_request=record)
    chromium = playwright.chromium
    browser = await chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
    try:
        page = browser.pages[0]
        await page.goto(f"{own_origin}/login")
        outcomes = []
        for url in [own_origin, *(f"http://{host}:{other.port}" for host in from_pages)]:
            await page.goto(f"{url}/page?to=ws://localhost:{socket.port}/")
            await page.wait_for_function("document.title !== 'waiting'", timeout=5000)
            outcomes.append(await page.title())
    finally:
        await browser.close()
        await socket.stop()
        await other.stop()
        await app.stop()
    refusals = [line for line in socket.transcript.lines if line.startswith("HTTP")]
    assert refusals == [f"HTTP / -> 403 Forbidden (invalid Origin header: {origin})" for origin, _ in seen[1:]]
    return [
        (origin.replace(str(app.port), "APP").replace(str(other.port), "OTHER"), cookie, outcome)
        for (origin, cookie), outcome in zip(seen, outcomes, strict=True)
    ]


@pytest.mark.parametrize("samesite", ["", "; SameSite=Lax", "; SameSite=Strict"], ids=["no SameSite", "Lax", "Strict"])
async def test_a_cookie_reaches_pages_of_the_same_site_only_and_origins_refuse_the_others(
    playwright: Any, tmp_path: Path, samesite: str
) -> None:
    seen = await handshakes(playwright, tmp_path, f"token=s3cret; Path=/{samesite}", ["localhost", "127.0.0.1"])
    assert seen == [
        ("http://localhost:APP", "token=s3cret", "got welcome"),  # the app's own page
        ("http://localhost:OTHER", "token=s3cret", "closed 1006"),  # another port: the same site, cookie sent
        ("http://127.0.0.1:OTHER", None, "closed 1006"),  # another site: no SameSite counts as Lax in Chromium
    ]


@pytest.mark.parametrize(("third_party_cookies", "sent"), [("as in a new profile", None), ("allowed", "token=s3cret")])
async def test_a_samesite_none_cookie_crosses_sites_where_third_party_cookies_are_allowed(
    playwright: Any, tmp_path: Path, third_party_cookies: str, sent: str | None
) -> None:
    if third_party_cookies == "allowed":  # the browser's setting "Allow third-party cookies"
        (tmp_path / "Default").mkdir()
        (tmp_path / "Default" / "Preferences").write_text(json.dumps({"profile": {"cookie_controls_mode": 0}}))
    seen = await handshakes(playwright, tmp_path, "token=s3cret; Path=/; SameSite=None; Secure", ["127.0.0.1"])
    assert seen == [
        ("http://localhost:APP", "token=s3cret", "got welcome"),
        ("http://127.0.0.1:OTHER", sent, "closed 1006"),  # refused by its Origin either way
    ]
