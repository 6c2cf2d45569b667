"""Every wslab benchmark in one command, one table: ``python bench/run_all.py [--quick] [--no-suite] [--capacity]``.

Each figure is printed with the reference it is compared with, measured in the same run, their
ratio, and a target where the project has one (PASS/MISS). It is a report, not a test: it exits
with 0 unless something crashes. Loopback only; every wait is bounded. See README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the sibling modules, whatever the working directory

import bench_chat_capacity  # noqa: E402
from bench_fanout import measure_fanout, percentile  # noqa: E402
from bench_tcp import start_tcp_echo  # noqa: E402
from bench_wslab import FULL, QUICK, EchoClient, Settings, measure_start_stop, measure_throughput  # noqa: E402

HERE = Path(__file__).parent
ROOT = HERE.parent
SUITE_TIMEOUT = 900.0  # seconds for the whole test suite
MEMORY_TIMEOUT = 120.0  # seconds for one memory process


@dataclass(frozen=True)
class Row:
    figure: str
    value: str
    reference: str
    ratio: str
    target: str = ""
    result: str = ""


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


async def measure_floor(client: EchoClient, settings: Settings) -> list[float]:
    """Messages per second of the same echo over raw TCP, one warm-up then ``settings.rounds`` rounds."""
    server, uri = await start_tcp_echo()
    try:
        await client.rate(uri, settings, "none")
        return [await client.rate(uri, settings, "none") for _ in range(settings.rounds)]
    finally:
        server.close()
        await server.wait_closed()


async def echo_rows(settings: Settings) -> list[Row]:
    client = await EchoClient.spawn()
    try:
        off = await measure_throughput(client, settings, "none")
        on = await measure_throughput(client, settings, "deflate")
        floor = await measure_floor(client, settings)
    finally:
        await client.close()
    med = statistics.median
    rows = []
    for label, t in (("compression off", off), ("compression on", on)):
        low, high = min(t.round_ratios), max(t.round_ratios)
        rows.append(
            Row(
                f"echo msg/s, wslab ({label})",
                f"{med(t.wslab):,.0f}",
                f"bare websockets {med(t.bare):,.0f}",
                f"{t.ratio:.3f} ({low:.2f}..{high:.2f})",
                ">= 0.95",
                verdict(t.ratio >= 0.95),
            )
        )
    rows.append(
        Row("echo msg/s, bare websockets (off)", f"{med(off.bare):,.0f}", f"raw asyncio TCP {med(floor):,.0f}",
            f"{med(off.bare) / med(floor):.3f}", "(the floor)")
    )
    rows.append(
        Row("echo msg/s, bare websockets (deflate on)", f"{med(on.bare):,.0f}", f"compression off {med(off.bare):,.0f}",
            f"{med(on.bare) / med(off.bare):.3f}", "(cost of deflate)")
    )
    return rows


async def start_stop_rows(settings: Settings) -> list[Row]:
    wslab_ms, bare_ms = await measure_start_stop(settings.repeats)
    w, b = statistics.median(wslab_ms), statistics.median(bare_ms)
    return [Row("start+stop ms, wslab (median)", f"{w:.2f}", f"bare serve() {b:.2f}", f"{w / b:.2f}", "< 20 ms", verdict(w < 20))]


async def fanout_rows(clients: int, rounds: int) -> list[Row]:
    timings = await measure_fanout(clients, rounds)
    rows = []
    for p in (50, 99):
        loop_ms, bcast_ms = percentile(timings["loop"], p), percentile(timings["broadcast"], p)
        speedup = loop_ms / bcast_ms
        rows.append(
            Row(
                f"fan-out to {clients:,}, broadcast() p{p} ms",
                f"{bcast_ms:.2f}",
                f"send() loop {loop_ms:.2f}",
                f"{speedup:.2f}x faster",
                "", "",  # clients that all read: about 1.15x, no target (broadcast wins with slow clients, chapter 02)
            )
        )
    return rows


def memory_kib(kind: str, clients: int) -> float:
    """KiB per idle connection, measured in a fresh process (see bench_memory.py)."""
    out = subprocess.run(
        [sys.executable, str(HERE / "bench_memory.py"), kind, str(clients)],
        capture_output=True, text=True, timeout=MEMORY_TIMEOUT, check=True,
    )
    return float(out.stdout.strip())


def memory_rows(clients: int) -> list[Row]:
    kib = {kind: memory_kib(kind, clients) for kind in ("tcp", "bare", "wslab", "wslab-deflate")}
    return [
        Row(f"idle KiB/connection, wslab ({clients:,})", f"{kib['wslab']:.1f}", f"bare websockets {kib['bare']:.1f}",
            f"{kib['wslab'] / kib['bare']:.2f}"),
        Row("idle KiB/connection, bare websockets", f"{kib['bare']:.1f}", f"raw asyncio TCP {kib['tcp']:.1f}",
            f"{kib['bare'] / kib['tcp']:.2f}", "(the floor)"),
        Row("idle KiB/connection, wslab, deflate on", f"{kib['wslab-deflate']:.1f}", f"deflate off {kib['wslab']:.1f}",
            f"{kib['wslab-deflate'] / kib['wslab']:.2f}", "(cost of deflate)"),
    ]


def capacity_rows() -> list[Row]:
    """The chat's room capacity next to the bare broadcast() floor (bench_chat_capacity.py; minutes)."""
    sizes = [2000, 4000, 6000, 8000, 10000, 12000, 14000]
    steps = {kind: bench_chat_capacity.measure(kind, sizes, 4, 10) for kind in ("bare", "chat")}
    best = {kind: max((s for s in found if s.ok), key=lambda s: s.clients, default=None) for kind, found in steps.items()}
    chat, bare = best["chat"], best["bare"]
    if chat is None or bare is None:
        return [Row("chat room capacity (p95 < 500 ms)", "0" if chat is None else f"{chat.clients:,}", "bare broadcast()", "-", ">= 10,000", "MISS")]
    ratio = chat.clients / bare.clients
    return [
        Row("chat room capacity (p95 < 500 ms)", f"{chat.clients:,}", f"bare broadcast() {bare.clients:,}", f"{ratio:.2f}",
            ">= 10,000 and >= 0.8", verdict(chat.clients >= 10_000 and ratio >= 0.8)),
        Row(f"chat room of {chat.clients:,} joined in s", f"{chat.join_s:.1f}", f"bare {bare.join_s:.1f}", f"{chat.join_s / bare.join_s:.2f}",
            "< 30 s", verdict(chat.join_s < 30)),
        Row("chat KiB per idle client", f"{chat.kib_per_client:.1f}", f"bare {bare.kib_per_client:.1f}",
            f"{chat.kib_per_client / bare.kib_per_client:.2f}", "<= 20", verdict(chat.kib_per_client <= 20)),
    ]


def suite_rows() -> list[Row]:
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=ROOT, capture_output=True, text=True, timeout=SUITE_TIMEOUT,
        )
        seconds = time.perf_counter() - started
        summary = (done.stdout.strip().splitlines() or ["no output"])[-1].strip("= ")
    except subprocess.TimeoutExpired:
        seconds, summary = SUITE_TIMEOUT, f"timed out after {SUITE_TIMEOUT:.0f} s"
    return [
        Row(f"test suite wall s ({summary})", f"{seconds:.1f}", "target 120", f"{seconds / 120:.2f}", "< 120 s",
            verdict(seconds < 120))
    ]


def print_table(rows: list[Row]) -> None:
    header = Row("figure", "value", "reference (same run)", "ratio", "target", "result")
    table = [tuple(vars(r).values()) for r in [header, *rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    table.insert(1, tuple("-" * w for w in widths))
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


async def main(quick: bool, suite: bool, capacity: bool) -> None:
    settings = QUICK if quick else FULL
    clients, rounds = 1000, (10 if quick else 50)
    rows = await echo_rows(settings)
    rows += await start_stop_rows(settings)
    rows += await fanout_rows(clients, rounds)
    rows += memory_rows(clients)
    if capacity:
        rows += capacity_rows()
    if suite:
        rows += suite_rows()
    print(
        f"echo: {settings.rounds} A/B rounds of {settings.messages:,} x 16-byte messages in batches of {settings.batch}, "
        f"client in a separate process; fan-out: {rounds} rounds per method; memory: {clients:,} idle clients.\n"
    )
    print_table(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds: under a minute, noisier")
    parser.add_argument("--no-suite", action="store_true", help="do not time the test suite")
    parser.add_argument("--capacity", action="store_true", help="also the chat's room capacity (several minutes)")
    args = parser.parse_args()
    started = time.perf_counter()
    asyncio.run(main(args.quick, not args.no_suite, args.capacity))
    print(f"\n(took {time.perf_counter() - started:.0f} s)")
