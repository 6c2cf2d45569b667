"""Frame traces: the frames and handshake lines websockets logs at DEBUG, as a stable transcript."""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from typing import Iterator

from .transcript import visible

__all__ = ["FrameTrace", "trace_frames", "normalise"]

# Values that change from run to run, and what a trace shows instead.
_RANDOM_PARTS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(Sec-WebSocket-Key: ).*"), r"\1<random key>"),
    (re.compile(r"(Sec-WebSocket-Accept: ).*"), r"\1<hash of the key>"),
    (re.compile(r"(Date: ).*"), r"\1<date>"),
    (re.compile(r"Python/\d+\.\d+ websockets/[\w.]+"), "Python/<version> websockets/<version>"),
    # ping() without data sends 4 random bytes, logged as hex, or as text when they happen to be UTF-8
    (re.compile(r"\b(PING|PONG) (?:'[^']*'|\"[^\"]*\") \[text, 4 bytes\]"), r"\1 <payload> [binary, 4 bytes]"),
    (re.compile(r"\b(PING|PONG) [0-9a-f]{2}(?: [0-9a-f]{2})*(?: \.\.\.(?: [0-9a-f]{2})+)? \["), r"\1 <payload> ["),
    (re.compile(r"\b(mask|masking key)([:=] ?)[0-9a-f]{2}(?: ?[0-9a-f]{2}){3}", re.I), r"\1\2<mask>"),
    (re.compile(r"(127\.0\.0\.1|localhost|\[::1\]):\d+"), r"\1:PORT"),
]
# websockets marks protocol lines with these: > sent, < received, = state, x TCP close, % keepalive, ! failure.
_PROTOCOL_LINE = re.compile(r"^[<>=x%!] ")


def normalise(line: str) -> str:
    """Replace random keys, payloads, dates, versions and ports in one trace line.

    >>> normalise("> PING 1a 2b 3c 4d [binary, 4 bytes]")
    '> PING <payload> [binary, 4 bytes]'
    """
    for pattern, replacement in _RANDOM_PARTS:
        line = pattern.sub(replacement, line)
    return line


class FrameTrace(logging.Handler):
    """Collects ``client``/``server`` protocol lines while a :func:`trace_frames` block runs."""

    def __init__(self, handshake: bool = True) -> None:
        super().__init__(logging.DEBUG)
        self.handshake = handshake
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not _PROTOCOL_LINE.match(message):
            return
        if not self.handshake and message[:2] in ("> ", "< ") and not _is_frame(message):
            return
        side = "server" if record.name.startswith("websockets.server") else "client"
        self.lines.append(visible(f"{side} {normalise(message)}"))  # headers come from the peer: escape

    def show(self) -> None:
        """Print the trace."""
        print("\n".join(self.lines) if self.lines else "(no frames: connect inside the trace block)")


def _is_frame(message: str) -> bool:
    return re.match(r"^[<>] (TEXT|BINARY|CONT|PING|PONG|CLOSE|EOF)\b", message) is not None


@contextmanager
def trace_frames(show: bool = True, handshake: bool = True) -> Iterator[FrameTrace]:
    """Record what websockets clients and servers send and receive inside the block.

    Connections opened inside the block are traced (websockets decides at connect time
    whether to log frames). The trace is printed at the end unless ``show=False``;
    ``handshake=False`` keeps only frames and state changes.

    >>> with trace_frames():                                  # doctest: +SKIP
    ...     async with connect(server.uri) as ws:
    ...         await ws.send("hi")
    client > TEXT 'hi' [2 bytes]
    """
    logger = logging.getLogger("websockets")
    trace = FrameTrace(handshake)
    saved = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # keep DEBUG lines out of any root handler (stderr)
    logger.addHandler(trace)
    try:
        yield trace
    finally:
        logger.removeHandler(trace)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    if show:
        trace.show()
