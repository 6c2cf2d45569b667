"""``python -m wslab.chat``: the chat as a process of its own, alone or one of several sharing Redis.

    python -m wslab.chat --port 8765
    python -m wslab.chat --port 0 --redis unix:///path/redis.sock --trusted-proxy 127.0.0.2

It prints ``listening on ws://HOST:PORT/ws (pid N, bus B)`` once it serves. SIGTERM (or Ctrl-C) drains:
``/health`` reports 503 ``draining``, new handshakes are refused, and after ``--drain-grace`` seconds
every client is closed with 1012 (service restart), so that it reconnects to another process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Sequence

from .bus import Bus, BusUnavailable, LocalBus, RedisBus
from .cluster import ClusterChat

__all__ = ["main", "parser"]


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 (any free port) to 65535, got {text!r}")
    return int(text)


def _redis_url(text: str) -> str:
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise argparse.ArgumentTypeError(f"expected a URL such as redis://127.0.0.1:6379/0 or unix:///path/redis.sock, got {text!r}")
    return text


def parser() -> argparse.ArgumentParser:
    """The command line: every option has a default that runs a chat on loopback."""
    p = argparse.ArgumentParser(prog="python -m wslab.chat", description="Run the wslab chat server as a process.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=0, help="port (default 0: any free port, printed at start)")
    p.add_argument("--redis", type=_redis_url, metavar="URL", help="share rooms through this Redis (default: rooms in this process only)")
    p.add_argument("--token", help="clients must send this token first (default: no token)")
    p.add_argument("--history", type=int, default=20, help="messages a joining client receives (default 20)")
    p.add_argument("--ttl", type=_positive, default=3.0, help="heartbeat TTL in seconds: a dead process's members go within 1.5 x TTL (default 3)")
    p.add_argument("--ping-interval", type=_positive, default=20.0, help="seconds between keepalive pings (default 20)")
    p.add_argument("--drain-grace", type=_positive, default=0.5, help="seconds between 'draining' and closing clients with 1012 (default 0.5)")
    p.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDR", help="a proxy whose X-Forwarded-For names the client (repeatable)")
    return p


def _bus(args: argparse.Namespace) -> Bus:
    if args.redis is None:
        return LocalBus(args.history)
    return RedisBus(args.redis, history=args.history, ttl=args.ttl)


async def serve(args: argparse.Namespace) -> None:
    """Serve until SIGTERM or SIGINT, then drain and exit."""
    chat = ClusterChat(bus=_bus(args), token=args.token, history=args.history, trusted_proxies=tuple(args.trusted_proxy))
    try:
        server = await chat.start(host=args.host, port=args.port, ping_interval=args.ping_interval)
    except BusUnavailable as exc:
        raise SystemExit(f"error: cannot reach Redis at {args.redis}: {exc}") from None
    except OSError as exc:
        raise SystemExit(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    server.transcript.add = _printing(server.transcript.add)  # type: ignore[method-assign]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    kind = "redis" if args.redis else "local"
    print(f"listening on ws://{args.host}:{server.port}/ws (pid {os.getpid()}, bus {kind})", flush=True)
    await stop.wait()
    await chat.drain(args.drain_grace)
    await chat.stop()
    print("stopped", flush=True)


def _printing(add: Callable[[str], None]) -> Callable[[str], None]:
    """The transcript's ``add`` that also prints each line: a process's transcript is its output."""

    def add_and_print(line: str) -> None:
        add(line)
        print(line, file=sys.__stdout__, flush=True)

    return add_and_print


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` (bad arguments: a one-line error and exit status 2) and run the chat."""
    args = parser().parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if args.redis:
        try:
            import redis  # noqa: F401
        except ImportError:
            raise SystemExit("error: --redis needs the Python package redis (pip install redis)") from None
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:  # a second Ctrl-C while draining
        pass


if __name__ == "__main__":
    main()
