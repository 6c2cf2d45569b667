"""wslab.http_get against answers built from HTTP's structure, served by a real socket server.

Hypothesis builds the answers part by part: a status line (good, odd, non-ASCII digits), header lines (repeated,
odd names, non-ASCII and control characters, hostile lengths and transfer codings), a body (plain, chunked with
hostile chunk sizes, cut short), and a server that closes or keeps the connection open. Whatever comes, http_get
returns a valid answer or raises NoHttpAnswer or TimeoutError naming the URL, and never takes longer than its
timeout. Answers that follow the rules are read exactly, whichever framing they use.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import wslab

HOSTILE = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WELL_FORMED = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_SIZE = 1000  # small, so that generated lengths and chunk sizes go over it
TIMEOUT = 0.5  # a keep-alive server holds an unfinished answer until then
SLACK = 1.0  # scheduling on a loaded machine
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

GOOD_STATUS = st.sampled_from(
    [b"HTTP/1.1 200 OK", b"HTTP/1.0 404 Not Found", b"HTTP/1.1 204 No Content", b"HTTP/1.1 304 Not Modified",
     b"HTTP/1.1 101 Switching Protocols", b"HTTP/1.1 200", b"HTTP/1.1 599 \xe9t\xe9"]
)
ODD_STATUS = st.sampled_from(
    [b"HTTP/1.1 2OO OK", b"HTTP/1.1 \xb2\xb2\xb2 OK", b"HTTP/1.1 \xd9\xa3\xd9\xa3\xd9\xa3 OK", b"HTTP/2 200",
     b"HTTP/1.1 99 Low", b"HTTP/1.1 600 High", b"http/1.1 200 OK", b"HTTP/1.1  200 OK", b"HTTP/1.1 200 O\x01K", b""]
) | st.binary(max_size=20)

def mostly(usual: st.SearchStrategy[bytes], odd: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """``usual`` three times out of four, so that what comes after it gets read too."""
    return st.sampled_from([usual, usual, usual, odd]).flatmap(lambda strategy: strategy)


STATUS_LINE = mostly(GOOD_STATUS, ODD_STATUS)
LENGTH = st.sampled_from(
    [b"0", b"5", b"17", b"\xb2", b"-1", b"1 ", b"+5", b"0x10", b"9" * 30, b"1, 1", b"\xd9\xa3", b"1_0", b""]
) | st.integers(0, 2 * MAX_SIZE).map(lambda n: str(n).encode())
CODING = st.sampled_from([b"chunked", b"Chunked", b"gzip, chunked", b"identity", b"chunked, chunked", b"chunked\x00"])
NAME = st.sampled_from([b"Connection", b"", b"X Y", b"\xc4", b" X", b"X\t"])
LATIN_1 = st.text(st.characters(codec="latin-1"), max_size=20).map(lambda text: text.encode("latin-1"))
PRINTABLE = st.text(st.characters(codec="latin-1", exclude_categories=["Cc"]), max_size=20)
VALUE = st.one_of(PRINTABLE.map(lambda text: text.encode("latin-1")), LATIN_1, st.binary(max_size=20))
LENGTH_LINE = st.tuples(st.sampled_from([b"Content-Length", b"content-length"]), LENGTH).map(b": ".join)
CODING_LINE = CODING.map(lambda value: b"Transfer-Encoding: " + value)
PLAIN_LINE = st.tuples(st.sampled_from([b"Content-Type", b"Set-Cookie", b"X-Odd"]), VALUE).map(b": ".join)
ODD_LINE = st.tuples(NAME, VALUE).map(b": ".join) | VALUE  # odd names, no colon, a folded line
HEADER_LINE = mostly(st.one_of(LENGTH_LINE, CODING_LINE, PLAIN_LINE), ODD_LINE)
CHUNK_SIZE = st.sampled_from([b"-1", b"0x5", b" 5", b"f" * 20, b"g", b"", b"5 ;x", b"\xb2"])


@st.composite
def chunked_body(draw: st.DrawFn) -> bytes:
    """Chunks whose size lines are right or hostile, then maybe the last chunk and trailers."""
    body = b""
    for data in draw(st.lists(st.binary(max_size=300), max_size=5)):
        size = draw(st.just(f"{len(data):x}".encode()) | CHUNK_SIZE)
        extension, end = draw(st.sampled_from([b"", b";ext=1"])), draw(st.sampled_from([b"\r\n", b"", b"xx"]))
        body += size + extension + b"\r\n" + data + end
    if draw(st.booleans()):
        body += b"0\r\n" + b"".join(line + b"\r\n" for line in draw(st.lists(HEADER_LINE, max_size=2))) + b"\r\n"
    return body


@st.composite
def hostile_answer(draw: st.DrawFn) -> bytes:
    """A status line, header lines, a body framed by a length, by chunks or by nothing; maybe cut short."""
    lines = [draw(STATUS_LINE), *draw(st.lists(HEADER_LINE, max_size=3))]
    framing = draw(st.sampled_from(["length", "chunked", "none"]))
    if framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        body = draw(chunked_body())
    else:
        body = draw(st.binary(max_size=2 * MAX_SIZE))
        if framing == "length":
            lines.append(b"Content-Length: " + draw(st.just(str(len(body)).encode()) | LENGTH))
    draw(st.randoms()).shuffle(lines[1:])
    answer = b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body
    if draw(st.booleans()):
        answer = b"HTTP/1.1 100 Continue\r\n\r\n" + answer
    cut = draw(st.one_of(st.none(), st.none(), st.integers(0, len(answer))))  # a third are cut short
    return answer if cut is None else answer[:cut]


async def serve_once(answer: bytes, close: bool, ask: object) -> object:
    """Serve ``answer`` to one client (then close, or wait for the client to), and return ``ask(url)``."""

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            if not close:
                await reader.read()
        writer.close()

    server = await asyncio.start_server(reply, "127.0.0.1", 0)
    try:
        return await ask(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/")  # type: ignore[operator]
    finally:
        server.close()
        await server.wait_closed()


def is_valid(answer: wslab.HttpAnswer) -> bool:
    """What a caller may rely on in any answer http_get returns."""
    return (
        100 <= answer.status <= 599
        and all(TOKEN.fullmatch(name) and not re.search(r"[\x00-\x08\x0a-\x1f\x7f]", value)
                for name, value in answer.headers.raw_items())
        and len(answer.body) <= MAX_SIZE
    )


@HOSTILE
@given(hostile_answer(), st.booleans())
def test_any_answer_gives_a_valid_answer_or_a_clear_error_within_the_timeout(answer: bytes, close: bool) -> None:
    async def ask(url: str) -> None:
        start = time.monotonic()
        try:
            got = await wslab.http_get(url, timeout=TIMEOUT, max_size=MAX_SIZE)
        except (wslab.NoHttpAnswer, TimeoutError) as error:
            assert str(error).startswith(f"GET {url}: "), error
            event(f"{type(error).__name__}: {re.sub(r'[0-9]+', 'N', str(error).split(': ', 1)[1])[:50]}")
        else:
            assert is_valid(got), got
            event(f"answer {got.status // 100}xx")
            length = got.headers.get_all("Content-Length")
            if length and got.status >= 200 and got.status not in (204, 304):
                assert len(got.body) == int(length[0])
        assert time.monotonic() - start < TIMEOUT + SLACK

    asyncio.run(serve_once(answer, close, ask))  # type: ignore[arg-type]


FIELD_TEXT = st.text(st.characters(codec="latin-1", exclude_categories=["Cc"]), max_size=20).map(str.strip)
FIELD = st.tuples(
    st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#$%&'*+^`|~", min_size=1, max_size=12)
    .filter(lambda name: name.lower() not in ("content-length", "transfer-encoding")),
    FIELD_TEXT,
)


Case = tuple[bytes, int, str, list[tuple[str, str]], bytes, bool]


@st.composite
def well_formed(draw: st.DrawFn) -> Case:
    """An answer that follows the rules: (bytes sent, status, reason, headers, body, keep the connection open)."""
    status = draw(st.integers(200, 599).filter(lambda code: code not in (204, 304)))
    reason = draw(FIELD_TEXT)
    headers = draw(st.lists(FIELD, max_size=4))
    body = draw(st.binary(max_size=MAX_SIZE))
    framing = draw(st.sampled_from(["length", "chunked", "until close"]))
    if framing == "length":
        framed = [*headers, ("Content-Length", str(len(body)))]
        payload = body
    elif framing == "chunked":
        framed = [*headers, ("Transfer-Encoding", "chunked")]
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)]) if b > a]
        extensions = [draw(st.sampled_from([b"", b";a=b", b" ;x"])) for _ in pieces]
        payload = b"".join(b"%X%s\r\n%s\r\n" % (len(piece), ext, piece) for piece, ext in zip(pieces, extensions))
        payload += b"0\r\n" + draw(st.sampled_from([b"", b"X-Trailer: 1\r\n"])) + b"\r\n"
    else:
        framed, payload = headers, body
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{name}: {value}\r\n" for name, value in framed) + "\r\n"
    keep_open = framing != "until close" and draw(st.booleans())
    return head.encode("latin-1") + payload, status, reason, framed, body, keep_open


@WELL_FORMED
@given(well_formed())
def test_an_answer_that_follows_the_rules_is_read_exactly(case: Case) -> None:
    answer, status, reason, headers, body, keep_open = case

    async def ask(url: str) -> wslab.HttpAnswer:
        return await wslab.http_get(url, timeout=10, max_size=MAX_SIZE)

    got = asyncio.run(serve_once(answer, not keep_open, ask))  # type: ignore[arg-type]
    assert (got.status, got.reason, list(got.headers.raw_items()), got.body) == (status, reason, headers, body)
