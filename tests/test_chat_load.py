"""Load: 500 clients in one room; every message reaches every client, in each sender's order."""

from __future__ import annotations

import resource

from wslab.chat import ChatServer
from wslab.chat.load import run_crowd


async def test_500_clients_get_every_message_in_order() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:  # 500 clients and their 500 server ends in one process
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    chat = ChatServer(history=0)
    server = await chat.start(name="crowd", compression=None)
    result = await run_crowd(chat.ws_uri, clients=500, senders=5, per_sender=10, timeout=90)
    await server.stop()

    assert len(result.received) == 500
    for received in result.received:
        assert len(received) == 50  # nothing lost, nothing twice
        assert [m["seq"] for m in received] == list(range(1, 51))  # the room's order, no gap
        for sender in range(5):
            numbers = [int(m["text"].split()[1]) for m in received if m["nick"] == f"c{sender}"]
            assert numbers == list(range(10))  # each sender's own order
    assert chat.kicked == 0
    assert len(result.latencies) == 500 * 50
