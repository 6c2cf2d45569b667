"""A plain HTTP GET with asyncio, for the HTTP side of a WebSocket server (pages, health checks, refusals).

The answer is read by the rules of HTTP/1.1 (RFC 9112): the body is as long as ``Content-Length`` says, or
comes in chunks (``Transfer-Encoding: chunked``), or, with neither, lasts until the server closes the
connection; 1xx, 204 and 304 answers have none. Whatever breaks those rules (a status that is not three
ASCII digits, a header line with a control character, two different lengths, a body over ``max_size``) is
refused with :class:`NoHttpAnswer`, which names the URL and what was wrong; nothing is read forever.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from websockets.datastructures import Headers

__all__ = ["HttpAnswer", "NoHttpAnswer", "http_get"]

HEAD_LIMIT = 2**16  # the status line and headers together (and the trailers of a chunked body): 64 KiB
INTERIM_LIMIT = 8  # 1xx answers (100 Continue, 103 Early Hints) skipped before the real one

# Only ASCII: "[0-9]" in a str pattern is not "\d", which also matches "²" and "٣".
_STATUS_LINE = re.compile(r"HTTP/1\.[01] ([1-5][0-9][0-9])(?: ([\t\x20-\x7e\x80-\xff]*))?")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a header name
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")  # no control characters but tab
_DIGITS = re.compile(r"[0-9]+")
_HEX_DIGITS = re.compile(r"[0-9A-Fa-f]+")
_TARGET = re.compile(r"[!-~]+")  # visible ASCII: what a request line may carry


class NoHttpAnswer(ConnectionError):
    """The server closed the connection, or sent something that is not HTTP, instead of an answer."""


@dataclass
class HttpAnswer:
    """What the server answered: ``status`` (200), ``reason`` ("OK"), ``headers``, ``body``."""

    status: int
    reason: str
    headers: Headers  # case-insensitive; ``headers.get_all(name)`` shows a header sent twice
    body: bytes

    @property
    def text(self) -> str:
        """The body as UTF-8 text (bytes that are not UTF-8 show as U+FFFD, never an error)."""
        return self.body.decode(errors="replace")


class _Refused(Exception):
    """What is wrong with the answer; :func:`http_get` puts the URL in front."""


@dataclass
class _Progress:
    """How far the answer got, so that a timeout or a closed connection can say what did arrive."""

    lines: list[bytes] = field(default_factory=list)  # status line and header lines read so far
    head_size: int = 0  # their bytes
    framing: str = ""  # what ends the body, once the headers are read: "a 10-byte body"
    body: bytearray = field(default_factory=bytearray)

    def timed_out(self, timeout: float) -> str:
        if not self.lines:
            return f"no answer within {timeout:g} s"
        if not self.framing:
            return f"the headers did not end within {timeout:g} s (got {self._head()})"
        return f"the body did not end within {timeout:g} s (got {len(self.body)} bytes of {self.framing})"

    def closed(self, partial: int) -> str:
        if not self.lines and not partial:
            return "the server closed the connection without answering"
        if not self.framing:
            size = self.head_size + partial
            return f"the server closed the connection after {size} bytes, before the headers ended"
        return f"the server closed the connection after {len(self.body)} bytes of {self.framing}"

    def _head(self) -> str:
        count = len(self.lines) - 1
        return f"{self.lines[0][:-2][:80].decode('latin-1')!r} and {count} header line{'' if count == 1 else 's'}"


async def http_get(
    url: str, headers: dict[str, str] | None = None, timeout: float = 5, max_size: int = 2**20
) -> HttpAnswer:
    """GET ``url`` (``http://`` or a server's ``ws://`` address) without blocking the event loop.

    It runs on the kernel's loop next to the server it asks, so a background server keeps serving. It sends
    ``headers`` (ASCII) and ``Connection: close``, and takes at most ``timeout`` seconds in all: past that,
    ``TimeoutError`` says how much of the answer had arrived. A server that closes the connection early, or answers with
    something that is not HTTP, or with a body over ``max_size`` bytes, raises :class:`NoHttpAnswer`
    naming the URL and what was wrong.

    >>> answer = await http_get(server.uri + "/health")       # doctest: +SKIP
    >>> answer.status, answer.headers["Content-Type"]          # doctest: +SKIP
    (200, 'text/plain; charset=utf-8')
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "ws") or not parts.hostname or parts.port is None:
        raise ValueError(f"http_get needs http://host:port/path or ws://host:port/path, got {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    fields = {"Host": parts.netloc.rpartition("@")[2]}
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError(f"http_get sends text headers: {name!r}: {value!r} (pass str(value))")
        if name.lower() in ("host", "connection"):  # one Host, and one Connection: close (read to the end)
            raise ValueError(f"http_get sets {name!r} itself: the URL's host, and Connection: close")
        fields[name] = value
    fields["Connection"] = "close"
    for name, value in fields.items():
        if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value) or not value.isascii():
            raise ValueError(f"http_get cannot send the header {name!r}: {value!r}")
    if not _TARGET.fullmatch(target):
        raise ValueError(f"http_get cannot send the path {target!r}: quote it (urllib.parse.quote)")
    request = f"GET {target} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    got = _Progress()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            try:
                writer.write((request + "\r\n").encode())
                return await _read_answer(reader, max_size, got)
            finally:
                writer.close()
    except TimeoutError:
        raise TimeoutError(f"GET {url}: {got.timed_out(timeout)}") from None
    except _Refused as exc:
        raise NoHttpAnswer(f"GET {url}: {exc}") from None
    except asyncio.IncompleteReadError as exc:
        raise NoHttpAnswer(f"GET {url}: {got.closed(len(exc.partial))}") from None
    except ConnectionResetError:
        raise NoHttpAnswer(f"GET {url}: the server reset the connection") from None
    except asyncio.LimitOverrunError:
        what = "a line of the chunked body is" if got.framing else "the answer's headers are"
        raise NoHttpAnswer(f"GET {url}: {what} too long (over 64 KiB)") from None


async def _read_answer(reader: asyncio.StreamReader, max_size: int, got: _Progress) -> HttpAnswer:
    """The first answer that is not a 1xx interim one, with its body."""
    for _ in range(INTERIM_LIMIT + 1):
        got.lines.clear()
        got.head_size = 0
        status, reason, headers = await _read_head(reader, got)
        if not (100 <= status < 200 and status != 101):  # 101: the server switched protocols, no HTTP body
            break
    else:
        raise _Refused(f"more than {INTERIM_LIMIT} interim (1xx) answers")
    length = _declared_length(headers, max_size)
    if status < 200 or status in (204, 304):
        return HttpAnswer(status, reason, headers, b"")
    if length == "chunked":
        got.framing = "a chunked body"
        await _read_chunks(reader, max_size, got)
    elif length is None:
        got.framing = "a body without a length, which ends when the server closes the connection"
        while data := await reader.read(2**16):
            got.body += data
            if len(got.body) > max_size:
                raise _Refused(f"the body is over {max_size} bytes (max_size)")
    else:
        got.framing = f"a {length}-byte body"
        await _read_exactly(reader, length, got)
    return HttpAnswer(status, reason, headers, bytes(got.body))


async def _read_head(reader: asyncio.StreamReader, got: _Progress) -> tuple[int, str, Headers]:
    """The status line and the headers, each line checked."""
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        got.lines.append(line)
        got.head_size += len(line)
        if got.head_size > HEAD_LIMIT:
            raise _Refused("the answer's headers are too long (over 64 KiB)")
    if not got.lines:
        raise _Refused("not an HTTP answer: an empty line instead of a status line")
    status_line = got.lines[0][:-2].decode("latin-1")
    if not (match := _STATUS_LINE.fullmatch(status_line)):
        if status_line.startswith("HTTP/"):
            raise _Refused(f"the status line is not 'HTTP/1.x', 3 digits and a reason: {status_line[:80]!r}")
        raise _Refused(f"not an HTTP answer: {status_line[:80]!r}")
    headers = Headers()
    for name, value in map(_header, got.lines[1:]):
        headers[name] = value
    return int(match[1]), match[2] or "", headers


def _header(line: bytes) -> tuple[str, str]:
    """One header line as (name, value): a token, a colon, a value without control characters."""
    text = line[:-2].decode("latin-1")
    name, colon, value = text.partition(":")
    value = value.strip(" \t")
    if not colon or not _TOKEN.fullmatch(name):
        raise _Refused(f"a header line that is not 'Name: value': {text[:80]!r}")
    if not _FIELD_VALUE.fullmatch(value):
        raise _Refused(f"the {name[:40]} header has a control character: {value[:80]!r}")
    return name, value


def _declared_length(headers: Headers, max_size: int) -> int | str | None:
    """The body's length from the headers, "chunked", or None when the end of the connection ends it."""
    lengths = set(headers.get_all("Content-Length"))
    codings = headers.get_all("Transfer-Encoding")
    if codings and lengths:
        raise _Refused("the answer has both Content-Length and Transfer-Encoding (which one ends the body?)")
    if codings:
        if [coding.lower() for coding in codings] != ["chunked"]:
            raise _Refused(f"Transfer-Encoding {', '.join(codings)[:80]!r} is not supported (only a single chunked)")
        return "chunked"
    if not lengths:
        return None
    if len(lengths) > 1:
        raise _Refused(f"the answer has different Content-Length headers: {', '.join(sorted(lengths))[:80]!r}")
    (length,) = lengths
    if not _DIGITS.fullmatch(length):
        raise _Refused(f"the answer's Content-Length is not a number: {length[:40]!r}")
    if len(length.lstrip("0")) > len(str(max_size)) or int(length) > max_size:  # 0002 is 2
        raise _Refused(f"the body is {length[:40]} bytes, over {max_size} (max_size)")
    return int(length)


async def _read_chunks(reader: asyncio.StreamReader, max_size: int, got: _Progress) -> None:
    """A chunked body: hex size lines, each chunk followed by CRLF, a last 0-size chunk, then trailers."""
    while True:
        line = await reader.readuntil(b"\r\n")
        size = line[:-2].split(b";", 1)[0].rstrip(b" \t").decode("latin-1")  # ";..." is an extension
        if not _HEX_DIGITS.fullmatch(size):
            raise _Refused(f"a chunk size that is not hexadecimal: {line[:40].decode('latin-1')!r}")
        if len(size.lstrip("0")) > len(f"{max_size:x}") or len(got.body) + int(size, 16) > max_size:
            raise _Refused(f"the chunked body is over {max_size} bytes (max_size)")
        if not (chunk := int(size, 16)):
            break
        await _read_exactly(reader, chunk, got)
        if await reader.readexactly(2) != b"\r\n":
            raise _Refused(f"a chunk of {chunk} bytes is not followed by CRLF")
    trailers = 0
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":  # trailer fields: read, checked, dropped
        _header(line)
        trailers += len(line)
        if trailers > HEAD_LIMIT:
            raise _Refused("the chunked body's trailers are too long (over 64 KiB)")


async def _read_exactly(reader: asyncio.StreamReader, size: int, got: _Progress) -> None:
    """Read ``size`` bytes into ``got.body``, so that a timeout can say how many had arrived."""
    end = len(got.body) + size
    while len(got.body) < end:
        data = await reader.read(min(end - len(got.body), 2**16))
        if not data:
            raise asyncio.IncompleteReadError(b"", end)
        got.body += data
