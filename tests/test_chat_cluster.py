"""The chat on several processes over Redis behind nginx: crashes, restarts and draining, with real processes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

import wslab
from wslab import services
from wslab.chat.client import ChatClient

from .conftest import require

TTL = 0.6  # seconds: a dead process's members go within 1.5 x TTL


@dataclass
class Cluster:
    redis: services.RedisServer
    chats: list[services.ChatProcess]
    proxy: services.Nginx

    @property
    def uri(self) -> str:
        return self.proxy.uri + "/ws"

    def home(self, nick: str) -> services.ChatProcess:
        return max(self.chats, key=lambda chat: chat.log().rfind(f"{nick} joined"))


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    require(shutil.which("redis-server") is not None, "redis-server (Debian package redis-server)")
    require(shutil.which("nginx") is not None or os.path.exists("/usr/sbin/nginx"), "nginx (Debian package nginx)")
    redis = await services.start_redis("cluster-redis")
    args = ["--ttl", str(TTL), "--trusted-proxy", "127.0.0.2", "--drain-grace", "0.2"]
    chats = [await services.start_chat(f"cluster-chat-{n}", redis=redis.url, args=args) for n in range(2)]
    proxy = await services.start_nginx([c.port for c in chats], "cluster-nginx", proxy_bind="127.0.0.2",
                                       proxy_next_upstream="error timeout http_503")
    yield Cluster(redis, chats, proxy)
    started = [redis, proxy, *chats]
    await wslab.stop_all()
    assert not any(service.running for service in started)


async def texts(client: ChatClient, n: int) -> list[str]:
    """The next ``n`` chat messages' texts, presence news skipped."""
    found: list[str] = []
    while len(found) < n:
        message: dict[str, Any] = await client.recv()
        if message["type"] == "message":
            found.append(message["text"])
    return found


async def joined_pair(cluster: Cluster) -> tuple[ChatClient, ChatClient]:
    ada = await ChatClient.connect(cluster.uri, proxy=None)
    bob = await ChatClient.connect(cluster.uri, proxy=None)
    await ada.join("lobby", "ada")
    await bob.join("lobby", "bob")
    await ada.recv()  # bob joined
    assert cluster.home("ada") is not cluster.home("bob")  # round robin: one on each process
    return ada, bob


async def test_kill_9_presence_cleaned_within_the_ttl_and_nobody_else_loses_a_message(cluster: Cluster) -> None:
    ada, bob = await joined_pair(cluster)
    carl = await ChatClient.connect(cluster.chats[1].uri if cluster.home("bob") is cluster.chats[1] else cluster.chats[0].uri, proxy=None)
    await carl.join("lobby", "carl")
    await ada.recv(), await bob.recv()
    victim = cluster.home("ada")
    killed = time.monotonic()
    victim.kill()
    leave = await bob.recv()
    assert time.monotonic() - killed < 1.5 * TTL + 0.5
    assert leave["changes"] == [{"event": "leave", "nick": "ada"}] and leave["count"] == 2
    await ada.ws.wait_closed()
    assert ada.ws.close_code == 1006
    ada = await ChatClient.connect(cluster.uri, proxy=None)  # nginx passes over the dead one
    assert (await ada.join("lobby", "ada"))["type"] == "joined"
    for n in range(5):
        await carl.say(f"c{n}")
    assert await texts(bob, 5) == [f"c{n}" for n in range(5)]
    assert await texts(ada, 5) == [f"c{n}" for n in range(5)]


async def test_sigterm_drains_health_reroutes_and_nothing_is_lost_to_those_who_stay(cluster: Cluster) -> None:
    ada, bob = await joined_pair(cluster)
    leaving = cluster.home("bob")
    leaving.terminate()
    while (answer := await wslab.http_get(leaving.http_url + "health")).status != 503:
        await asyncio.sleep(0.02)
    assert json.loads(answer.body)["status"] == "draining"
    await cluster.proxy.route_to([cluster.home("ada").port])
    for n in range(10):  # in flight while bob's process drains
        await ada.say(f"a{n}")
    assert await texts(ada, 10) == [f"a{n}" for n in range(10)]
    received = []
    with pytest.raises(ConnectionClosedError):  # 1012 is not a normal close: iteration would raise too
        while True:
            received.append(await bob.ws.recv())
    assert [json.loads(m)["text"] for m in received[:-1] if json.loads(m)["type"] == "message"] == [f"a{n}" for n in range(10)]
    assert json.loads(received[-1]) == {"v": 1, "type": "closing", "code": 1012, "reason": "service restart"}
    assert bob.ws.close_code == 1012 and await leaving.wait() == 0
    bob = await ChatClient.connect(cluster.uri, proxy=None)
    assert (await bob.join("lobby", "bob"))["history"][-1]["text"] == "a9"


async def test_redis_restart_processes_reconnect_and_the_loss_is_counted(cluster: Cluster) -> None:
    ada, bob = await joined_pair(cluster)
    cluster.redis.kill()
    await ada.say("lost")
    assert (await ada.recv())["code"] == "unavailable"
    await cluster.redis.restart()
    async with asyncio.timeout(10):
        while not all("redis is back" in chat.log() for chat in cluster.chats):
            await asyncio.sleep(0.05)
    for chat in cluster.chats:
        assert chat.running and chat.log().count("redis lost") == 1  # backoff, not a crash loop
    await ada.say("after")
    assert await texts(bob, 1) == ["after"]
    taken = await ChatClient.connect(cluster.uri, proxy=None)
    assert (await taken.join("lobby", "bob"))["code"] == "nick-taken"  # the members were claimed again


async def test_forwarded_for_is_trusted_from_the_proxy_only(cluster: Cluster) -> None:
    async with connect(cluster.uri, proxy=None, local_addr=("127.0.0.3", 0)) as ws:
        await ws.recv()
    chat = cluster.chats[0]
    async with connect(chat.uri, proxy=None, additional_headers={"X-Forwarded-For": "203.0.113.9"}) as ws:
        await ws.recv()
    lines = [line for c in cluster.chats for line in c.log().splitlines() if "connection from" in line]
    assert any(line.endswith("connection from 127.0.0.3") for line in lines)
    assert not any("203.0.113.9" in line for line in lines)
