"""Delivery latency of the chapter 05 chat: 500 clients in one room, p50/p99 from send to arrival.

Usage: python bench/bench_chat_latency.py [--clients 500] [--senders 5] [--messages 10]

Server and clients share one process and one event loop, so the figures include the clients' own
work: read them as an upper bound for the server. Loopback only; the run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time

from wslab.chat import ChatServer
from wslab.chat.load import run_crowd


async def measure(clients: int, senders: int, messages: int) -> None:
    chat = ChatServer(history=0)
    server = await chat.start(name="bench-chat", compression=None)
    started = time.perf_counter()
    try:
        result = await run_crowd(chat.ws_uri, clients=clients, senders=senders, per_sender=messages, timeout=120)
    finally:
        await server.stop()
    elapsed = time.perf_counter() - started
    complete = all(len(r) == senders * messages for r in result.received)
    print(f"chat delivery latency, {clients} clients in one room, {senders * messages} messages each")
    print(f"  deliveries        {len(result.latencies):>10,}   (every client got every message: {complete})")
    print(f"  p50               {result.percentile(50) * 1000:>10.1f} ms")
    print(f"  p99               {result.percentile(99) * 1000:>10.1f} ms")
    print(f"  max               {max(result.latencies) * 1000:>10.1f} ms")
    print(f"  whole run         {elapsed:>10.1f} s    (joins included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--senders", type=int, default=5)
    parser.add_argument("--messages", type=int, default=10, help="messages per sender")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.clients + 256)), hard))
    asyncio.run(measure(args.clients, args.senders, args.messages))


if __name__ == "__main__":
    main()
