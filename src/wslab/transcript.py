"""Per-server transcripts: what a background server saw, printed later in the learner's cell."""

from __future__ import annotations

import contextvars
import io
import logging
import sys
import threading
import unicodedata
from typing import Any, TextIO

__all__ = ["Transcript", "TranscriptLogHandler", "bind", "visible"]

# The transcript and client label of the handler running in the current task, if any.
_current: contextvars.ContextVar[tuple["Transcript", str] | None] = contextvars.ContextVar(
    "wslab_transcript", default=None
)


class Transcript:
    """An ordered, thread-safe list of lines about one server.

    wslab writes ``client 1: connected to /path`` and ``client 1: closed 1000 (OK)``;
    whatever the handler prints lands here too, prefixed with its client's label.

    >>> t = Transcript()
    >>> t.add("client 1: hello")
    >>> t.show()
    client 1: hello
    """

    def __init__(self, max_lines: int = 10_000) -> None:
        self.lines: list[str] = []
        self.max_lines = max_lines  # the oldest lines go first, so a long load test cannot fill memory
        self._shown = 0
        self._lock = threading.Lock()

    def add(self, line: str) -> None:
        """Append one line (or several, separated by ``\\n``).

        What a client sent may reach a transcript, so each line is made safe to print and read:
        control characters, lone surrogates, bidi overrides and other invisible or line-breaking
        characters are shown escaped (``\\r``, ``\\ud800``, ``\\u202e``), never written raw.
        """
        with self._lock:
            self.lines.extend(visible(part) for part in line.split("\n"))
            excess = len(self.lines) - self.max_lines
            if excess > 0:
                del self.lines[:excess]
                self._shown = max(0, self._shown - excess)

    def show(self, everything: bool = False) -> None:
        """Print the lines not shown yet (all of them with ``everything=True``)."""
        with self._lock:
            start = 0 if everything else self._shown
            new, self._shown = self.lines[start:], len(self.lines)
        print("\n".join(new) if new else "(nothing new)")

    def clear(self) -> None:
        """Forget every line."""
        with self._lock:
            self.lines.clear()
            self._shown = 0

    def __str__(self) -> str:
        with self._lock:
            return "\n".join(self.lines)


def visible(text: str) -> str:
    """``text`` with every character that is not safely printable escaped, as Python would write it.

    >>> visible("ok \\ud800 \\u202egnp.exe\\r")
    'ok \\\\ud800 \\\\u202egnp.exe\\\\r'
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == "\t" or unicodedata.category(ch) == "Zs" else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    return ch.encode("unicode_escape").decode("ascii")


def bind(transcript: Transcript, label: str) -> contextvars.Token[Any]:
    """Route ``print`` in this task (and tasks it starts) to ``transcript`` as ``label``."""
    _install_stdout_router()
    return _current.set((transcript, label))


class _StdoutRouter(io.TextIOBase):
    """sys.stdout stand-in: handler output goes to its transcript, the rest passes through."""

    def __init__(self, wrapped: TextIO) -> None:
        self.wrapped = wrapped
        self._partial: dict[tuple[int, str], str] = {}

    def write(self, text: str) -> int:
        target = _current.get()
        if target is None:
            return self.wrapped.write(text)
        transcript, label = target
        key = (id(transcript), label)
        buffered = self._partial.pop(key, "") + text
        *complete, rest = buffered.split("\n")
        for line in complete:
            transcript.add(f"{label}: {line}")
        if rest:
            self._partial[key] = rest
        return len(text)

    def flush(self) -> None:
        self.wrapped.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


def _install_stdout_router() -> None:
    if not isinstance(sys.stdout, _StdoutRouter):
        sys.stdout = _StdoutRouter(sys.stdout)


class TranscriptLogHandler(logging.Handler):
    """Copies a server's warnings and errors into its transcript, one line each."""

    def __init__(self, transcript: Transcript) -> None:
        super().__init__(logging.WARNING)
        self.transcript = transcript

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            message += f": {type(exc).__name__}: {exc}"
        target = _current.get()
        prefix = f"{target[1]}: " if target else ""
        self.transcript.add(f"{prefix}{message}")
