"""New events, live, for /events: server-sent events fed by the broker's
listeners (called on the event loop for each committed event). Each open page
has a bounded queue; a page that does not keep up is dropped (its browser
reconnects, and the page shows the journal again), so a slow client never
holds the bus's memory or time (§13)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import weakref
from collections.abc import Callable
from typing import Any

from aiohttp import web

from hookbus.bus.events.event import compile_globs
from hookbus.bus.http.keys import BROKER
from hookbus.bus.http.ui.pages import event_row
from hookbus.bus.http.ui.render import fragment

log = logging.getLogger("hookbus.http")

QUEUE = 256  # events waiting for one page; more and the page is dropped
KEEPALIVE_S = 15.0
MAX_STREAMS = 200
CLOSE = (0, b"")


class Stream:
    """One open page's feed: the events its filter wants, until it is closed or falls behind."""

    def __init__(self, wants: Callable[[str], Any] | None) -> None:
        self.wants = wants
        self.queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue(QUEUE)
        self.dropped = False

    def __call__(self, type_: str | None, seq: int, body: bytes) -> None:
        if type_ is None or self.dropped or (self.wants is not None and not self.wants(type_)):
            return  # a heartbeat, or not for this page
        try:
            self.queue.put_nowait((seq, body))
        except asyncio.QueueFull:
            self.dropped = True
            self.close()

    def close(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(CLOSE)
        if self.queue.full():  # make room for the close mark: what is queued is dropped anyway
            self.queue = asyncio.Queue(1)
            self.queue.put_nowait(CLOSE)


STREAMS: web.AppKey[weakref.WeakSet[Stream]] = web.AppKey("ui_streams")


def sse(event: str, html: str) -> bytes:
    data = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {event}\n{data}\n".encode()


@functools.lru_cache(maxsize=QUEUE)
def rendered(seq: int, body: bytes) -> bytes:
    """One event's message, rendered once for all open pages: each page's
    listener is handed the same seq and body, so the others find it here."""
    return sse("event", fragment("event_row.html", e=event_row(seq, body)))


async def stream(request: web.Request) -> web.StreamResponse:
    streams = request.app[STREAMS]
    if len(streams) >= MAX_STREAMS:
        raise web.HTTPServiceUnavailable(reason=f"at most {MAX_STREAMS} live pages at once")
    pattern = request.query.get("type") or None
    feed = Stream(compile_globs([pattern]).match if pattern else None)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    broker = request.app[BROKER]
    broker.attach(feed)
    streams.add(feed)
    try:
        await response.write(b"retry: 2000\n\n")
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_S):
                    items = [await feed.queue.get()]
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            while not feed.queue.empty():  # what came meanwhile goes in the same write
                items.append(feed.queue.get_nowait())
            closing = CLOSE in items
            if closing:
                items = items[:items.index(CLOSE)]
            if items:
                await response.write(b"".join(rendered(seq, body) for seq, body in items))
            if closing:
                break
    except ConnectionResetError:
        pass  # the browser went away
    finally:
        broker.detach(feed)
        streams.discard(feed)
    if feed.dropped:
        log.info("http: a live page fell %d events behind and was dropped", QUEUE)
    return response


async def close_streams(app: web.Application) -> None:
    """At shutdown, end every live page, so that stopping does not wait on them."""
    streams: weakref.WeakSet[Stream] = app[STREAMS]
    for feed in list(streams):
        feed.close()
