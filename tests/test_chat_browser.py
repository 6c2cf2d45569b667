"""The chat page in a real browser (headless Chromium): two tabs and a Python client chat together."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Coroutine
from http import HTTPStatus
from typing import Any, AsyncIterator, TypeVar

import pytest
from websockets.exceptions import ConnectionClosedError

import wslab
import wslab.chat
from wslab.chat import ChatServer
from wslab.chat.client import ChatClient

T = TypeVar("T")


async def join(page: Any, url: str, nick: str, room: str = "lobby") -> None:
    await page.goto(url)
    await page.wait_for_selector("#status:has-text('connected')")
    await page.fill("#nick", nick)
    await page.fill("#room", room)
    await page.click("#join")
    await page.wait_for_selector("#messages li[data-type=joined]")


async def say(page: Any, text: str) -> None:
    await page.fill("#text", text)
    await page.click("#send")


async def sees(page: Any, line: str) -> None:
    await page.wait_for_selector(f"#messages li[data-type=message]:has-text({line!r})", timeout=5000)


async def next_of(client: ChatClient, kind: str) -> dict[str, Any]:
    """The next message of type ``kind`` (presence news in between is skipped)."""
    while (message := await client.recv())["type"] != kind:
        assert message["type"] == "presence", message
    return message


async def test_two_tabs_and_a_python_client_chat(browser: Any) -> None:
    chat = ChatServer()
    await chat.start()
    context = await browser.new_context()
    ada, bob = await context.new_page(), await context.new_page()
    await join(ada, chat.http_url, "ada")
    await join(bob, chat.http_url, "bob")
    async with ChatClient(chat.ws_uri) as cy:
        joined = await cy.join("lobby", "cy")
        assert joined["members"] == ["ada", "bob", "cy"]

        await say(ada, "hello from a tab")
        await sees(bob, "ada: hello from a tab")
        assert await next_of(cy, "message") == {
            "v": 1, "type": "message", "room": "lobby", "seq": 1, "nick": "ada", "text": "hello from a tab"
        }

        await cy.say("hello from Python")
        for page in (ada, bob):
            await sees(page, "cy: hello from Python")

        assert await ada.text_content("#members") == "3 here: ada, bob, cy"

        await say(bob, "bob here")
        await sees(ada, "bob: bob here")
        assert (await next_of(cy, "message"))["text"] == "hello from Python"
        assert (await next_of(cy, "message"))["text"] == "bob here"
    await context.close()
    await chat.server.stop()  # type: ignore[union-attr]


async def test_a_page_from_another_origin_is_refused(browser: Any) -> None:
    chat = ChatServer()
    await chat.start()

    async def never(websocket: Any) -> None:  # the other site only serves a page
        await websocket.close()

    def evil_page(connection: Any, request: Any) -> Any:
        response = connection.respond(
            HTTPStatus.OK,
            f"""<!doctype html><title>waiting</title><script>
            const ws = new WebSocket("{chat.ws_uri}");
            ws.onopen = () => document.title = "open";
            ws.onclose = (event) => document.title = "closed " + event.code;
            </script>""",
        )
        del response.headers["Content-Type"]  # respond() says text/plain; assigning would add a second one
        response.headers["Content-Type"] = "text/html; charset=utf-8"
        return response

    other = await wslab.start(never, name="other-site", process_request=evil_page)
    page = await browser.new_page()
    await page.goto(other.uri.replace("ws", "http", 1) + "/")
    await page.wait_for_function("document.title.startsWith('closed') || document.title === 'open'", timeout=5000)
    assert await page.title() == "closed 1006"  # the browser only learns that the handshake failed
    await page.close()
    await other.stop()
    await chat.server.stop()  # type: ignore[union-attr]
    assert chat.server.transcript.lines == ["HTTP /ws -> 403 Forbidden"]  # type: ignore[union-attr]


async def test_the_page_says_why_it_was_closed(browser: Any) -> None:
    chat = ChatServer(rate=1, burst=2)
    await chat.start()
    page = await browser.new_page()
    await join(page, chat.http_url, "ada")
    for n in range(4):
        await say(page, f"spam {n}")
    await page.wait_for_selector("#status:has-text('disconnected')")
    assert await page.text_content("#status") == "disconnected: 1008 rate limit exceeded"
    await page.close()
    await chat.server.stop()  # type: ignore[union-attr]


async def test_the_token_goes_in_the_first_message_from_the_fragment(browser: Any) -> None:
    chat = ChatServer(token="s3cret")
    await chat.start()
    page = await browser.new_page()
    await join(page, chat.http_url + "#chat_token=s3cret", "ada")
    assert "s3cret" not in "".join(chat.server.transcript.lines)  # type: ignore[union-attr]
    other = await browser.new_page()
    await other.goto(chat.http_url)
    await other.wait_for_selector("#error:has-text('needs a token')")
    for tab in (page, other):
        await tab.close()
    await chat.server.stop()  # type: ignore[union-attr]


async def test_a_refusal_at_the_handshake_shows_as_1006_in_the_page(browser: Any) -> None:
    chat = ChatServer(token="s3cret", auth="query")
    await chat.start()
    page = await browser.new_page()
    await page.goto(chat.http_url)  # no ?chat_token=: the handshake gets 401, which the page cannot see
    await page.wait_for_selector("#status:has-text('disconnected')")
    assert await page.text_content("#status") == "disconnected: 1006 connection lost or refused"
    await page.close()
    await chat.server.stop()  # type: ignore[union-attr]
    assert "HTTP /ws -> 401 Unauthorized" in chat.server.transcript.lines  # type: ignore[union-attr]


async def test_a_missing_trailing_slash_is_added_by_the_page(browser: Any) -> None:
    page = await browser.new_page()
    html = wslab.chat.page()

    async def serve_the_page(route: Any) -> None:  # as a proxy prefix would: /user/ada/proxy/8000
        await route.fulfill(status=200, content_type="text/html", body=html)

    await page.route("http://hub.example/user/ada/proxy/8000**", serve_the_page)
    await page.goto("http://hub.example/user/ada/proxy/8000")
    await page.wait_for_url("http://hub.example/user/ada/proxy/8000/")
    await page.close()


async def test_the_page_comes_back_after_the_server_restarts(browser: Any) -> None:
    chat = ChatServer()
    server = await chat.start()
    page = await browser.new_page()
    await join(page, chat.http_url, "ada")
    await say(page, "before")
    await sees(page, "ada: before")
    await server.stop()  # the page gets "closing" 1001, then tries again
    await page.wait_for_selector("#status:has-text('reconnecting in')")
    assert (await page.text_content("#status")).startswith("disconnected: 1001 server stopping; reconnecting in")
    again = ChatServer()
    await again.start(port=server.port)  # the same address: a restarted service
    # joined again: "joined" replaces the list, and the new server's room has no history, so "before" goes
    await page.wait_for_selector("#messages li[data-type=message]", state="detached", timeout=10000)
    assert await page.text_content("#messages li[data-type=joined]") == "you are ada in lobby"
    async with ChatClient(again.ws_uri) as bob:
        await bob.join("lobby", "bob")
        await say(page, "back again")
        assert (await next_of(bob, "message"))["text"] == "back again"
    await page.close()
    await again.server.stop()  # type: ignore[union-attr]


async def test_a_refusal_after_the_handshake_is_not_retried(browser: Any) -> None:
    chat = ChatServer(token="s3cret")
    await chat.start()
    page = await browser.new_page()
    await page.goto(chat.http_url + "#chat_token=wrong")
    await page.wait_for_selector("#status:has-text('disconnected')")
    assert await page.text_content("#status") == "disconnected: 1008 authentication failed"
    await page.close()
    await chat.server.stop()  # type: ignore[union-attr]
    assert sum(line.endswith("connected to /ws") for line in chat.server.transcript.lines) == 1  # type: ignore[union-attr]


class ChatInAThread:
    """A chat on an event loop of its own, in a thread: ``freeze()`` blocks that loop, as a hung server would be."""

    def __init__(self, chat: ChatServer) -> None:
        self.chat = chat
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thawed = threading.Event()

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    def freeze(self) -> None:
        """Block the chat's loop until ``thaw()``: TCP still accepts (the kernel does), nothing answers."""
        self.loop.call_soon_threadsafe(self.thawed.wait)

    def thaw(self) -> None:
        self.thawed.set()


@contextlib.asynccontextmanager
async def chat_in_a_thread(**kwargs: Any) -> AsyncIterator[ChatInAThread]:
    frozen = ChatInAThread(ChatServer(**kwargs))
    frozen.thread.start()
    try:
        await frozen.run(frozen.chat.start())
        yield frozen
    finally:
        frozen.thaw()
        if frozen.chat.server is not None:
            await frozen.run(frozen.chat.server.stop())
        frozen.loop.call_soon_threadsafe(frozen.loop.stop)
        frozen.thread.join(5)
        frozen.loop.close()


async def test_the_page_notices_a_frozen_server_and_comes_back_when_it_thaws(browser: Any) -> None:
    async with chat_in_a_thread(heartbeat=1) as frozen:
        chat = frozen.chat
        page = await browser.new_page()
        async with ChatClient(chat.ws_uri, timeout=20) as bob:  # bob keeps the room (and its history) alive
            await bob.join("lobby", "bob")
            await join(page, chat.http_url, "ada")
            frozen.freeze()  # no FIN, no RST: without a heartbeat the page would say "connected" for minutes
            await say(page, "anyone there?")
            await page.wait_for_selector("#status:has-text('no message from the server')", timeout=10000)
            status = await page.text_content("#status")
            assert status.startswith("disconnected: 1006 no message from the server for 3 s; reconnecting in"), status
            # The kernel still accepts TCP for the frozen server: a handshake that is never answered is silence too.
            await page.wait_for_selector("#status:has-text('(try 2 of 10)')", timeout=15000)
            frozen.thaw()
            back = await page.wait_for_selector("#messages li[data-type=reconnected]", timeout=15000)
            assert await back.text_content() == "back after: 1006 no message from the server for 3 s"
            assert await page.text_content("#status") == "connected (protocol version 1)"
            # Sent before the page gave up, it was in the TCP buffers: delivered once the server woke.
            assert (await next_of(bob, "message"))["text"] == "anyone there?"
            await sees(page, "ada: anyone there?")  # in the history of the room the page joined again
            await say(page, "back again")
            assert (await next_of(bob, "message"))["text"] == "back again"
        await page.close()
        lines = "\n".join(chat.server.transcript.lines)  # type: ignore[union-attr]
        assert "failed" not in lines and "Traceback" not in lines, lines


async def test_the_pages_own_pings_never_get_it_kicked(browser: Any) -> None:
    chat = ChatServer(rate=1, burst=3, heartbeat=1)
    await chat.start()
    page = await browser.new_page()
    pinged = asyncio.Event()
    pings = []

    def on_websocket(ws: Any) -> None:
        def sent(payload: Any) -> None:
            if '"ping"' in str(payload):
                pings.append(payload)
                if len(pings) == 3:
                    pinged.set()
        ws.on("framesent", sent)

    page.on("websocket", on_websocket)
    await join(page, chat.http_url, "ada")
    await asyncio.wait_for(pinged.wait(), 10)  # three pings, one a second: as many as the message rate allows
    for n in range(3):  # then a whole burst of messages: a ping that took a token would make this one too many
        await say(page, f"burst {n}")
    for n in range(3):
        await sees(page, f"ada: burst {n}")
    assert await page.text_content("#status") == "connected (protocol version 1)"
    assert not any("rate limit" in line for line in chat.server.transcript.lines)  # type: ignore[union-attr]
    await page.close()
    await chat.server.stop()  # type: ignore[union-attr]


def the_chat_page(connection: Any, request: Any) -> Any:
    """``process_request`` for a scripted stand-in for the chat: the page at every path, the WebSocket at /ws."""
    if request.path.startswith("/ws"):
        return None
    response = connection.respond(HTTPStatus.OK, wslab.chat.page())
    del response.headers["Content-Type"]  # respond() says text/plain; assigning would add a second one
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    return response


async def test_a_long_task_in_the_page_is_not_a_dead_server(browser: Any) -> None:
    chat = ChatServer(heartbeat=1)
    await chat.start()
    page = await browser.new_page()
    after: list[Any] = []  # the pings sent once the long task is over
    counting = False
    three = asyncio.Event()

    def on_websocket(ws: Any) -> None:
        def sent(payload: Any) -> None:
            if counting and '"ping"' in str(payload):
                after.append(payload)
                if len(after) == 3:
                    three.set()
        ws.on("framesent", sent)

    page.on("websocket", on_websocket)
    await join(page, chat.http_url, "ada")
    # The page's own thread busy for four heartbeats (a heavy script, a debugger, a throttled tab): its timers
    # run late, but the server answered every ping it got. Silence counted from the last pong would say "dead".
    await page.evaluate("() => { const t = Date.now(); while (Date.now() - t < 4000) {} }")
    counting = True
    await asyncio.wait_for(three.wait(), 15)  # three heartbeats after the long task, each answered
    assert await page.text_content("#status") == "connected (protocol version 1)"
    assert await page.query_selector("#messages li[data-type=reconnected]") is None
    await page.close()
    await chat.server.stop()  # type: ignore[union-attr]
    assert sum(line.endswith("connected to /ws") for line in chat.server.transcript.lines) == 1  # type: ignore[union-attr]


async def test_a_token_page_notices_a_server_that_hangs_after_hello(browser: Any) -> None:
    async def hangs_after_hello(websocket: Any) -> None:  # asks for a token, then never answers (frozen, or the network is gone)
        hello = {"v": 1, "type": "hello", "limits": {}, "history": 20, "auth": True, "heartbeat": 1}
        await websocket.send(json.dumps(hello))
        await websocket.wait_closed()

    server = await wslab.start(hangs_after_hello, name="hangs-after-hello", process_request=the_chat_page)
    page = await browser.new_page()
    await page.goto(server.uri.replace("ws", "http", 1) + "/#chat_token=s3cret")
    await page.wait_for_selector("#status:has-text('protocol version')")
    # No pings before the token is answered: silence alone decides, with room for the server's auth_timeout.
    await page.wait_for_selector("#status:has-text('no message from the server')", timeout=25000)
    status = await page.text_content("#status")
    assert status.startswith("disconnected: 1006 no message from the server for 15 s; reconnecting in"), status
    await page.close()
    await server.stop()


async def test_text_typed_while_disconnected_stays_in_the_input(browser: Any) -> None:
    chat = ChatServer()
    server = await chat.start()
    page = await browser.new_page()
    await join(page, chat.http_url, "ada")
    await server.stop()
    await page.wait_for_selector("#status:has-text('reconnecting in')")
    await say(page, "an important sentence")
    assert await page.text_content("#error") == "not connected: nothing was sent"
    assert await page.input_value("#text") == "an important sentence"
    await page.close()


async def test_a_join_planned_for_a_lost_connection_is_not_sent_on_the_next(browser: Any) -> None:
    joins: list[list[dict[str, Any]]] = []  # per connection, the joins it received
    later: set[asyncio.Task[None]] = set()

    async def reply(websocket: Any, **message: Any) -> None:
        await websocket.send(json.dumps({"v": 1, **message}))

    async def held_then_restarts(websocket: Any) -> None:
        await asyncio.sleep(10.5)  # the page counts a connection that held 10 s as a fresh start: the next retry is quick
        await reply(websocket, type="error", code="nick-taken", error="ada is taken")  # the page plans a join in 1 s
        await websocket.close(1012, "service restart")

    async def scripted(websocket: Any) -> None:
        """1: joins, then restarts; 2: holds the rejoin 10.5 s, refuses it (nick-taken) and restarts; 3: joins."""
        received: list[dict[str, Any]] = []
        joins.append(received)
        number = len(joins)
        await reply(websocket, type="hello", limits={}, history=20, auth=False, heartbeat=5)
        with contextlib.suppress(ConnectionClosedError):  # the end of a connection closed with 1012
            async for raw in websocket:
                message = json.loads(raw)
                if message["type"] == "ping":
                    await reply(websocket, type="pong")
                elif message["type"] == "join":
                    received.append(message)
                    if number == 2:
                        task = asyncio.create_task(held_then_restarts(websocket))
                        later.add(task)
                        continue
                    await reply(websocket, type="joined", room="lobby", nick="ada", members=["ada"], history=[])
                    if number == 1:
                        await websocket.close(1012, "service restart")

    server = await wslab.start(scripted, name="scripted-chat", process_request=the_chat_page)
    page = await browser.new_page()
    await join(page, server.uri.replace("ws", "http", 1) + "/", "ada")
    await page.wait_for_selector("#messages li[data-type=reconnected]", timeout=20000)  # joined on the third connection
    assert len(joins) == 3
    await page.wait_for_timeout(1500)  # time is the point: past the moment the cancelled join would have been sent
    assert [len(received) for received in joins] == [1, 1, 1]
    await page.close()
    await server.stop()
    assert all(task.done() for task in later)


async def test_a_page_that_was_connected_keeps_trying_every_30_s(browser: Any) -> None:
    chat = ChatServer()
    server = await chat.start()
    page = await browser.new_page()
    await page.clock.install()  # the page's timers on a clock the test moves: 10 quick tries take a minute otherwise
    await join(page, chat.http_url, "ada")
    await server.stop()  # nothing listens: every reconnection is refused, as a full chat's 503 is
    for n in range(1, 13):
        which = f"(try {n} of 10)" if n <= 10 else f"(try {n}: every 30 s from now on)"
        await page.wait_for_selector(f"#status:has-text({which!r})")
        if n < 12:
            await page.clock.fast_forward(40_000)  # past the longest delay: the next try starts
    status = await page.text_content("#status")
    assert status.startswith("disconnected: 1006 connection lost or refused; reconnecting in"), status
    again = ChatServer()
    await again.start(port=server.port)  # a seat, or the server, is back
    await page.clock.fast_forward(40_000)
    back = await page.wait_for_selector("#messages li[data-type=reconnected]", timeout=10000)
    assert await back.text_content() == "back after: 1006 connection lost or refused"
    await page.close()
    await again.server.stop()  # type: ignore[union-attr]
