"""Benchmark: does wslab cost anything compared to a bare websockets server?

Run ``python bench/bench_wslab.py`` (about a minute) or add ``--quick`` (a few seconds).
It prints one table and always exits with 0: it is a report, not a test. See README.md.

1. Echo throughput through ``wslab.start(echo)`` divided by the same through a bare
   ``websockets.asyncio.server.serve(echo, ...)``, with compression on (the default) and off.
   Both servers run in this process; the client runs in a separate process (echo_client.py),
   so that it does not compete with the server for the event loop. The two servers are
   measured alternately, round after round, and their medians are compared.
2. The time to start and stop a background server, ``await wslab.start(echo)`` then
   ``await server.stop()``, and the same for a bare ``serve()`` + ``close()`` + ``wait_closed()``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve

import wslab

CLIENT = Path(__file__).with_name("echo_client.py")
HOST = "127.0.0.1"  # loopback only
JOB_TIMEOUT = 60.0  # seconds for one client job, including its handshake
THROUGHPUT_TARGET = 0.95  # wslab / bare, at least
START_STOP_TARGET_MS = 20.0  # median, at most


@dataclass(frozen=True)
class Settings:
    rounds: int  # A/B rounds per compression setting
    messages: int  # echoes per round and per server
    batch: int  # messages sent before reading their echoes
    repeats: int  # start/stop cycles per kind of server


FULL = Settings(rounds=10, messages=40_000, batch=16, repeats=200)
QUICK = Settings(rounds=4, messages=5_000, batch=16, repeats=50)


async def echo(websocket: ServerConnection) -> None:
    """The handler under test, the same for both servers."""
    async for message in websocket:
        await websocket.send(message)


class EchoClient:
    """The echo_client.py process: give it a job, get back the seconds it took."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def spawn(cls) -> EchoClient:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(CLIENT), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        return cls(process)

    async def rate(self, uri: str, settings: Settings, compression: str) -> float:
        """Messages per second for one round against ``uri``."""
        assert self.process.stdin and self.process.stdout
        gc.collect()  # so that a collection left over from the last round does not land in this one
        self.process.stdin.write(f"{uri} {settings.messages} {settings.batch} {compression}\n".encode())
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), JOB_TIMEOUT)
        if not line:
            raise RuntimeError(f"the echo client exited with {await self.process.wait()}; see its error above")
        return settings.messages // settings.batch * settings.batch / float(line)

    async def close(self) -> None:
        assert self.process.stdin
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 5)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


@dataclass
class Throughput:
    wslab: list[float]  # messages per second, one per round
    bare: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.wslab) / statistics.median(self.bare)

    @property
    def round_ratios(self) -> list[float]:
        return [w / b for w, b in zip(self.wslab, self.bare)]


async def measure_throughput(client: EchoClient, settings: Settings, compression: str) -> Throughput:
    """Alternate the two servers (ABBA order), ``settings.rounds`` times each, after one warm-up."""
    kwargs = {} if compression == "deflate" else {"compression": None}
    wslab_server = await wslab.start(echo, name=f"bench-{compression}", **kwargs)
    bare_server = await serve(echo, HOST, 0, **kwargs)
    bare_uri = f"ws://{HOST}:{bare_server.sockets[0].getsockname()[1]}"
    result = Throughput([], [])
    try:
        await client.rate(wslab_server.uri, settings, compression)
        await client.rate(bare_uri, settings, compression)
        for round_ in range(settings.rounds):
            order = [(wslab_server.uri, result.wslab), (bare_uri, result.bare)]
            for uri, rates in order if round_ % 2 == 0 else reversed(order):
                rates.append(await client.rate(uri, settings, compression))
    finally:
        await wslab_server.stop()
        bare_server.close()
        await bare_server.wait_closed()
    return result


async def measure_start_stop(repeats: int) -> tuple[list[float], list[float]]:
    """Milliseconds per start + stop cycle, for wslab and for a bare serve(), interleaved."""

    async def wslab_cycle() -> None:
        server = await wslab.start(echo)
        await server.stop()

    async def bare_cycle() -> None:
        server = await serve(echo, HOST, 0)
        server.close()
        await server.wait_closed()

    timings: dict[str, list[float]] = {"wslab": [], "bare": []}
    for i in range(repeats):
        cycles = [("wslab", wslab_cycle), ("bare", bare_cycle)]
        for name, cycle in cycles if i % 2 == 0 else reversed(cycles):
            started = time.perf_counter()
            await asyncio.wait_for(cycle(), 10)
            timings[name].append((time.perf_counter() - started) * 1000)
    return timings["wslab"], timings["bare"]


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    header = ("figure", "value", "target", "result")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


async def main(settings: Settings) -> None:
    rows: list[tuple[str, str, str, str]] = []
    client = await EchoClient.spawn()
    try:
        for compression in ("deflate", "none"):
            label = "compression on" if compression == "deflate" else "compression=None"
            t = await measure_throughput(client, settings, compression)
            low, high = min(t.round_ratios), max(t.round_ratios)
            rows += [
                (f"echo msg/s, wslab ({label})", f"{statistics.median(t.wslab):,.0f}", "", ""),
                (f"echo msg/s, bare ({label})", f"{statistics.median(t.bare):,.0f}", "", ""),
                (
                    f"ratio wslab/bare ({label})",
                    f"{t.ratio:.3f} (rounds {low:.2f}..{high:.2f})",
                    f">= {THROUGHPUT_TARGET}",
                    verdict(t.ratio >= THROUGHPUT_TARGET),
                ),
            ]
    finally:
        await client.close()

    wslab_ms, bare_ms = await measure_start_stop(settings.repeats)
    median = statistics.median(wslab_ms)
    rows += [
        (
            "start+stop ms, wslab, median",
            f"{median:.2f}",
            f"< {START_STOP_TARGET_MS:g}",
            verdict(median < START_STOP_TARGET_MS),
        ),
        ("start+stop ms, wslab, p90", f"{p90(wslab_ms):.2f}", "", ""),
        ("start+stop ms, bare, median", f"{statistics.median(bare_ms):.2f}", "(reference)", ""),
        ("start+stop ms, bare, p90", f"{p90(bare_ms):.2f}", "(reference)", ""),
    ]
    print(
        f"{settings.rounds} A/B rounds of {settings.messages} x 16-byte echoes in batches of {settings.batch}, "
        f"client in a separate process; {settings.repeats} start/stop cycles each.\n"
    )
    print_table(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short, noisier run (a few seconds)")
    started = time.perf_counter()
    asyncio.run(main(QUICK if parser.parse_args().quick else FULL))
    print(f"\n(took {time.perf_counter() - started:.0f} s)")
