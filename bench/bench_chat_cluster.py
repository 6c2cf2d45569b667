"""Capacity of the chat on a bus: the Redis bus against the in-process bus, then 1 against 2 processes behind nginx.

Usage: python bench/bench_chat_cluster.py [--sizes 1000,2000,...] [--workers 4] [--messages 10]

The method is bench_chat_capacity.py's, reused as is (its ``measure()``: clients in worker processes,
4 concurrent senders, p95 from send to the last client, the largest room under 500 ms); only the server
under test changes. Each is started with wslab.services, as chapter 07 does:

- ``local``: one ``python -m wslab.chat`` with the in-process bus;
- ``redis``: one ``python -m wslab.chat --redis`` (every message goes to Redis and back);
- ``nginx-1`` / ``nginx-2``: one or two Redis-bus processes behind nginx (least_conn).

At the end of each run, the CPU seconds each process used (user + system, from /proc) show where the time
went: the chat processes, Redis, nginx, and the client workers that share the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import bench_chat_capacity as capacity  # noqa: E402
from raw_clients import raise_fd_limit  # noqa: E402

KINDS = ("local", "redis", "nginx-1", "nginx-2")
CPU: dict[str, float] = {}  # CPU seconds of the client workers, by kind


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far, in seconds (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks (USER_HZ = 100)


class Process(capacity.Process):
    """bench_chat_capacity's process, with this file's servers; the client workers speak the chat protocol."""

    def __init__(self, *args: str) -> None:
        self.role, self.kind = args[0], args[1]
        if args[0] == "serve":
            self.proc = subprocess.Popen([sys.executable, __file__, "serve", args[1]], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True, bufsize=1)
        else:
            super().__init__(args[0], "chat", *args[2:])

    def stop(self) -> None:
        if self.role == "clients" and self.proc.poll() is None:
            CPU[self.kind] = CPU.get(self.kind, 0.0) + cpu_seconds(self.proc.pid)
        super().stop()


async def serve(kind: str) -> None:
    """Start ``kind``'s processes, print the port clients use, and when stdin closes, their CPU time (stderr)."""
    from wslab import services

    started: dict[str, Any] = {}
    redis_url = None
    if kind != "local":
        started["redis"] = await services.start_redis("bench-redis")
        redis_url = started["redis"].url
    count = 2 if kind == "nginx-2" else 1
    chats = [await services.start_chat(f"bench-chat-{n}", redis=redis_url) for n in range(count)]
    started |= {chat.name: chat for chat in chats}
    port = chats[0].port
    if kind.startswith("nginx"):
        started["nginx"] = proxy = await services.start_nginx([chat.port for chat in chats], "bench-nginx")
        port = proxy.port
    print(port, flush=True)
    await asyncio.to_thread(sys.stdin.read)  # measure() closes our stdin when it is done
    used = {name: cpu_seconds(service.pid) for name, service in started.items()}
    if kind == "nginx-1" or kind == "nginx-2":  # nginx's work is done in its worker process
        used["nginx"] = sum(cpu_seconds(int(pid)) for pid in _children(started["nginx"].pid)) + used["nginx"]
    print(f"CPU {kind}: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in used.items()), file=sys.stderr, flush=True)
    for service in reversed(started.values()):  # the proxy, the chats, then Redis
        await service.stop()


def _children(pid: int) -> list[str]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return path.read_text().split() if path.exists() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,1000,2000,3000,4000,6000,8000")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--messages", type=int, default=10, help="broadcasts per sender in a round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds at each size; the best p95 counts")
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args()
    capacity.Process = Process  # type: ignore[misc]  # measure() starts its processes through this name
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = args.kinds.split(",")
    results = {kind: capacity.measure(kind, sizes, args.workers, args.messages, args.repeats) for kind in kinds}
    best = {kind: max((s.clients for s in steps if s.ok), default=0) for kind, steps in results.items()}
    print()
    print("| server | capacity (p95 < 500 ms) | p95 at capacity | room joined in | ratio to local | client workers' CPU |")
    print("|---|---|---|---|---|---|")
    for kind, steps in results.items():
        step = next((s for s in steps if s.clients == best[kind]), None)
        ratio = best[kind] / best["local"] if best.get("local") else float("nan")
        cpu = f"{CPU.get(kind, 0.0):.1f} s"
        if step is None:
            print(f"| {kind} | 0 | - | - | {ratio:.2f} | {cpu} |")
        else:
            print(f"| {kind} | {step.clients:,} | {step.p95_ms:.0f} ms | {step.join_s:.1f} s | {ratio:.2f} | {cpu} |")


if __name__ == "__main__":
    raise_fd_limit()
    if sys.argv[1:2] == ["serve"]:
        asyncio.run(serve(sys.argv[2]))
    else:
        main()
