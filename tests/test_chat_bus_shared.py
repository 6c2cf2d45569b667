"""Chapter 05's chat tests, run again on :class:`ClusterChat` with each bus: one behaviour, two implementations.

Every test of ``test_chat_server.py`` runs here unchanged, with the chat it builds (its ``chat`` fixture, and
each ``ChatServer(...)`` it makes itself) replaced by a ``ClusterChat`` with the same settings, on a
``LocalBus`` or on a ``RedisBus`` of its own. The few that look inside the one-process chat are left out below,
each with the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from wslab.chat import ChatServer
from wslab.chat.bus import LocalBus, RedisBus
from wslab.chat.cluster import ClusterChat

from . import test_chat_server as shared
from .test_chat_bus_hostile import prefix, redis_url  # noqa: F401 (a fixture)
from .test_chat_server import *  # noqa: F403 (the tests themselves)

# Tests that look inside the one-process chat: not part of the shared behaviour, so not collected here
INSIDE = {
    "test_joining_another_room_leaves_the_first": "reads ChatServer.rooms (a ClusterChat keeps its rooms in the bus)",
    "test_http_page_health_and_404": "/health of a ClusterChat also names its node",
    "test_a_stalled_reader_is_disconnected_with_1008_and_loses_nothing_before":
        "serves chat.handler with wslab.start(), not chat.start(): the bus is never started",
}
for _name in INSIDE:
    del globals()[_name]


@pytest.fixture(params=["local", "redis"], autouse=True)
def bus_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make every chat the shared tests build a ClusterChat on this kind of bus."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""

    def cluster_chat(**settings: Any) -> ClusterChat:
        history = settings.get("history", 20)
        bus = RedisBus(url, prefix=prefix(), history=history, ttl=5, timeout=1) if url else LocalBus(history)
        return ClusterChat(bus=bus, **settings)

    monkeypatch.setattr(shared, "ChatServer", cluster_chat)
    return request.param


@pytest.fixture
async def chat(bus_kind: str) -> AsyncIterator[ChatServer]:
    """The shared tests' ``chat`` fixture, built by the class swapped in above."""
    chat = shared.ChatServer()
    server = await chat.start()
    yield chat
    await server.stop()
