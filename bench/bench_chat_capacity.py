"""Capacity of the chapter 05 chat: the largest room in which a broadcast reaches everyone within 500 ms (p95).

Usage: python bench/bench_chat_capacity.py [--sizes 2000,4000,...] [--workers 4] [--messages 10]

Measured the way websocket-bench does it: the clients live in ``--workers`` processes of their own
(hand-rolled asyncio clients: a frame parser and a byte search, a few µs per delivery), the server in
another. The room grows step by step; at each size, 4 members broadcast concurrently, each sending its
next message once the last client has its previous one (``--messages`` each, in ``--repeats`` rounds whose
best p95 counts: other programs on the machine only ever add delay), and each message is timed
from its send until the LAST client has it (one clock:
``time.perf_counter`` is system-wide on Linux). The same run measures a bare ``websockets`` server
whose handler does ``broadcast(server.connections, message)``: the floor. Both use their default
settings (the chat: rate limit, slow-client rule, caps). Also reported: how long the whole room took
to join, and the server's memory per client (RSS growth / clients, idle after the joins).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from raw_clients import raise_fd_limit  # noqa: E402

from wslab.frames import Opcode, encode_frame, upgrade_request  # noqa: E402

SENDERS = 4
TARGET = 0.5  # seconds: p95 from send to the last client


# -- the server process -------------------------------------------------------------------------------


async def serve(kind: str) -> None:
    """Run the chat (default settings) or the bare broadcast server; print the port; stop when stdin closes."""
    if kind == "chat":
        from wslab.chat import ChatServer

        chat = ChatServer()
        server = await chat.start(name="capacity")
        port = server.port
    else:
        from websockets.asyncio.server import broadcast, serve

        from websockets.exceptions import ConnectionClosed

        async def handler(ws):  # type: ignore[no-untyped-def]
            with contextlib.suppress(ConnectionClosed):  # clients of a finished step just go away
                async for message in ws:
                    broadcast(bare.connections, message)

        bare = await serve(handler, "127.0.0.1", 0, compression=None)
        port = bare.sockets[0].getsockname()[1]
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


# -- a client process ---------------------------------------------------------------------------------


class Client(asyncio.Protocol):
    """One WebSocket client: handshake, then parse frames; answer pings; note message ids that arrive."""

    def __init__(self, worker: Worker, nick: str) -> None:
        self.worker, self.nick = worker, nick
        self.buffer = b""
        self.open = False
        self.joined = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(upgrade_request(f"127.0.0.1:{self.worker.port}", "/ws"))

    def send(self, text: str) -> None:
        assert self.transport is not None
        self.transport.write(encode_frame(Opcode.TEXT, text.encode(), mask=os.urandom(4)))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        if not self.open:
            head, sep, buffer = buffer.partition(b"\r\n\r\n")
            if not sep:
                self.buffer = head
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.joined.set_exception(ConnectionError(head.split(b"\r\n")[0].decode()))
                return
            self.open = True
            if self.worker.kind == "chat":
                self.send(json.dumps({"v": 1, "type": "join", "room": "bench", "nick": self.nick}))
            else:
                self.joined.set_result(None)
        while len(buffer) >= 2:
            opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                length, start = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                length, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + length:
                break
            payload, buffer = buffer[start : start + length], buffer[start + length :]
            if opcode == Opcode.PING:
                assert self.transport is not None
                self.transport.write(encode_frame(Opcode.PONG, payload, mask=os.urandom(4)))
            elif opcode == Opcode.TEXT:
                at = payload.find(b'"text": "b')
                if payload.startswith(b'{"v": 1, "type": "joined"'):  # its history holds old messages
                    self.joined.set_result(None)
                elif at >= 0:
                    self.worker.arrived(int(payload[at + 10 : payload.index(b'"', at + 10)]))
            elif opcode == Opcode.CLOSE:
                self.worker.closed += 1
        self.buffer = buffer

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("closed before joining"))


class Worker:
    """Clients of one process; commands on stdin, answers on stdout (one line each)."""

    def __init__(self, kind: str, port: int, index: int) -> None:
        self.kind, self.port, self.index = kind, port, index
        self.clients: list[Client] = []
        self.counts: dict[int, int] = {}
        self.closed = 0

    def arrived(self, message_id: int) -> None:
        count = self.counts.get(message_id, 0) + 1
        self.counts[message_id] = count
        if count == len(self.clients):
            print(f"arrived {message_id} {time.perf_counter()!r}", flush=True)

    async def grow(self, n: int) -> None:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(100)

        async def one(nick: str) -> None:
            async with gate:
                client = Client(self, nick)
                await loop.create_connection(lambda: client, "127.0.0.1", self.port)
                await client.joined
                self.clients.append(client)

        start = len(self.clients)
        await asyncio.gather(*(one(f"w{self.index}c{i}") for i in range(start, start + n)))

    async def run(self) -> None:
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().split():
            if line[0] == "grow":
                await self.grow(int(line[1]))
                print(f"grown {len(self.clients)} closed {self.closed}", flush=True)
            elif line[0] == "send":  # send <sender> <id>
                self.clients[int(line[1])].send(json.dumps({"v": 1, "type": "say", "text": f"b{line[2]}"}))
                print(f"sent {line[2]} {time.perf_counter()!r}", flush=True)


# -- the driver ----------------------------------------------------------------------------------------


@dataclass
class Step:
    kind: str
    clients: int
    p95_ms: float
    join_s: float
    kib_per_client: float
    kicked: int

    @property
    def ok(self) -> bool:
        return self.p95_ms < TARGET * 1000 and self.kicked == 0


class Process:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def broadcast_round(procs: list[Process], events: Any, workers: int, per_sender: int, first_id: int) -> list[float]:
    """Each of the 4 senders broadcasts ``per_sender`` messages, the next once the last client has the previous one.

    Returns the sorted latencies in seconds (inf for a message that did not reach everyone within 30 s).
    """
    sender_of: dict[int, int] = {}
    sent: dict[int, float] = {}
    arrivals: dict[int, list[float]] = {}
    latencies: list[float] = []
    left = dict.fromkeys(range(SENDERS), per_sender)
    next_id = first_id

    def send(sender: int) -> None:
        nonlocal next_id
        sender_of[next_id] = sender
        procs[0].say(f"send {sender} {next_id}")
        next_id += 1
        left[sender] -= 1

    for sender in range(SENDERS):
        send(sender)
    deadline = time.perf_counter() + 30 + per_sender
    while len(latencies) < SENDERS * per_sender and time.perf_counter() < deadline:
        try:
            _, line = events.get(timeout=1)
        except Empty:
            continue
        what, message_id, when = line.split()
        number = int(message_id)
        if number < first_id:
            continue  # a straggler from the previous step
        if what == "sent":
            sent[number] = float(when)
        else:
            arrivals.setdefault(number, []).append(float(when))
        if len(arrivals.get(number, ())) == workers and number in sent:
            latencies.append(max(arrivals[number]) - sent[number])
            if left[sender_of[number]]:
                send(sender_of[number])
    latencies += [float("inf")] * (SENDERS * per_sender - len(latencies))
    return sorted(latencies)


def measure(kind: str, sizes: list[int], workers: int, per_sender: int, repeats: int = 3) -> list[Step]:
    """Grow one room of ``kind`` through ``sizes``; stop after the first size that misses the target."""
    import threading

    server = Process("serve", kind)
    port = server.line()
    base = rss_kib(server.proc.pid)
    procs = [Process("clients", kind, port, str(i)) for i in range(workers)]
    events: Queue[tuple[int, str]] = Queue()

    def pump(i: int, p: Process) -> None:
        while line := p.line():
            events.put((i, line))

    for i, p in enumerate(procs):
        threading.Thread(target=pump, args=(i, p), daemon=True).start()
    steps: list[Step] = []
    joined_s = 0.0
    have = 0
    next_id = 0
    try:
        for size in sizes:
            started = time.perf_counter()
            share = [(size - have) // workers + (1 if i < (size - have) % workers else 0) for i in range(workers)]
            for p, n in zip(procs, share):
                p.say(f"grow {n}")
            closed, grown = 0, 0
            while grown < workers:
                _, line = events.get(timeout=600)
                if line.startswith("grown"):  # (late arrivals of the previous step are skipped)
                    grown += 1
                    closed += int(line.split()[3])
            joined_s += time.perf_counter() - started
            have = size
            kib = (rss_kib(server.proc.pid) - base) / size
            p95s = []
            for _ in range(repeats):  # the best of a few rounds: other programs on the machine only add delay
                latencies = broadcast_round(procs, events, workers, per_sender, next_id)
                next_id += SENDERS * per_sender
                p95s.append(latencies[int(0.95 * (len(latencies) - 1))])
            p95 = min(p95s)
            step = Step(kind, size, p95 * 1000, joined_s, kib, closed)
            steps.append(step)
            print(f"  {kind:5} {size:>6,} clients: p95 {step.p95_ms:8.1f} ms, joined in {joined_s:6.1f} s, {kib:5.1f} KiB/client, closed {closed}", flush=True)
            if not step.ok:
                break
    finally:
        for p in procs:
            p.stop()
        server.stop()
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,2000,4000,6000,8000,10000,12000,14000")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--messages", type=int, default=10, help="broadcasts per sender in a round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds at each size; the best p95 counts")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {kind: measure(kind, sizes, args.workers, args.messages, args.repeats) for kind in ("bare", "chat")}
    capacity = {kind: max((s.clients for s in steps if s.ok), default=0) for kind, steps in results.items()}
    print()
    print("| server | capacity (p95 < 500 ms) | p95 at capacity | room joined in | KiB per client | ratio to floor |")
    print("|---|---|---|---|---|---|")
    for kind, steps in results.items():
        best = next((s for s in steps if s.clients == capacity[kind]), None)
        ratio = capacity[kind] / capacity["bare"] if capacity["bare"] else float("nan")
        if best is None:
            print(f"| {kind} | 0 | - | - | - | {ratio:.2f} |")
        else:
            print(f"| {kind} | {best.clients:,} | {best.p95_ms:.0f} ms | {best.join_s:.1f} s | {best.kib_per_client:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    raise_fd_limit()
    if sys.argv[1:2] == ["serve"]:
        asyncio.run(serve(sys.argv[2]))
    elif sys.argv[1:2] == ["clients"]:
        asyncio.run(Worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])).run())
    else:
        main()
