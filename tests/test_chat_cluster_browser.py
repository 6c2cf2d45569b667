"""Two Chromium tabs, through nginx, on two chat processes sharing Redis: they chat, and the page comes back
when its process drains (SIGTERM, 1012) or dies (kill -9, 1006)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import pytest

import wslab
from wslab import services

from .conftest import require
from .test_chat_browser import join, say, sees


async def cluster(args: tuple[str, ...] = ()) -> tuple[list[services.ChatProcess], services.Nginx]:
    """Redis, two chat processes and nginx in front (a draining process's 503 sends nginx to the next one)."""
    require(shutil.which("redis-server") is not None, "redis-server (Debian package redis-server)")
    require(shutil.which("nginx") is not None or os.path.exists("/usr/sbin/nginx"), "nginx (Debian package nginx)")
    redis = await services.start_redis("browser-redis")
    chats = [await services.start_chat(f"browser-chat-{n}", redis=redis.url, args=args) for n in range(2)]
    proxy = await services.start_nginx([c.port for c in chats], "browser-nginx", proxy_next_upstream="error timeout http_503")
    return chats, proxy


async def two_tabs(browser: Any, proxy: services.Nginx) -> tuple[Any, Any, Any]:
    """A browser context with ada's and bob's tabs, each joined to the lobby through nginx."""
    page_url = proxy.uri.replace("ws", "http", 1) + "/"
    context = await browser.new_context()
    ada, bob = await context.new_page(), await context.new_page()
    await join(ada, page_url, "ada")
    await join(bob, page_url, "bob")
    return context, ada, bob


async def test_two_tabs_on_two_processes_chat_through_nginx(browser: Any) -> None:
    chats, proxy = await cluster()
    try:
        context, ada, bob = await two_tabs(browser, proxy)
        assert [("ada joined" in c.log(), "bob joined" in c.log()) for c in chats] in (
            [(True, False), (False, True)], [(False, True), (True, False)])  # one tab on each process
        await say(ada, "hello across processes")
        await sees(bob, "ada: hello across processes")
        await say(bob, "and back")
        await sees(ada, "bob: and back")
        assert await ada.text_content("#members") == "2 here: ada, bob"
        await context.close()
    finally:
        await wslab.stop_all()


@pytest.mark.parametrize(
    ("end", "told"),
    [(services.ChatProcess.terminate, "1012 service restart"),
      (services.ChatProcess.kill, "1006 connection lost or refused")],
    ids=["sigterm", "kill-9"],
)
async def test_the_page_rejoins_on_another_process_when_its_own_goes(
    browser: Any, end: Callable[[services.ChatProcess], None], told: str
) -> None:
    chats, proxy = await cluster(("--ttl", "1"))  # after kill -9, ada's old member is reaped within 1.5 s
    try:
        context, ada, bob = await two_tabs(browser, proxy)
        await say(ada, "before")
        await sees(bob, "ada: before")
        home = next(c for c in chats if "ada joined" in c.log())
        await proxy.route_to([c.port for c in chats if c is not home])  # as an orchestrator takes it out
        end(home)
        # back, on the other process, as ada again (after a kill -9, once the reaper freed the nickname)
        await ada.wait_for_selector("#messages li[data-type=reconnected]", timeout=10000)
        assert await ada.text_content("#messages li[data-type=reconnected]") == f"back after: {told}"
        assert await ada.text_content("#messages li[data-type=joined]") == "you are ada in lobby"
        assert await ada.text_content("#messages li[data-type=message]") == "ada: before"  # the history, from Redis
        await say(ada, "after")
        await sees(bob, "ada: after")
        assert await ada.text_content("#members") == "2 here: ada, bob"
        await context.close()
    finally:
        await wslab.stop_all()
