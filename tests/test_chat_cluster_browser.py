"""Two Chromium tabs, through nginx, on two chat processes sharing Redis: they chat."""

from __future__ import annotations

import os
import shutil
from typing import Any, AsyncIterator

import pytest

import wslab
from wslab import services

from .conftest import CHROMIUM, CHROMIUM_FLAGS, require
from .test_chat_browser import join, say, sees


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    require(CHROMIUM is not None, "Chromium (Debian package chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        await browser.close()


async def test_two_tabs_on_two_processes_chat_through_nginx(browser: Any) -> None:
    require(shutil.which("redis-server") is not None, "redis-server (Debian package redis-server)")
    require(shutil.which("nginx") is not None or os.path.exists("/usr/sbin/nginx"), "nginx (Debian package nginx)")
    redis = await services.start_redis("browser-redis")
    chats = [await services.start_chat(f"browser-chat-{n}", redis=redis.url) for n in range(2)]
    proxy = await services.start_nginx([c.port for c in chats], "browser-nginx")
    try:
        page_url = proxy.uri.replace("ws", "http", 1) + "/"
        context = await browser.new_context()
        ada, bob = await context.new_page(), await context.new_page()
        await join(ada, page_url, "ada")
        await join(bob, page_url, "bob")
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
