"""New events, live, for /events: server-sent events from the newest committed
events, which the broker's listener keeps in one shared, bounded buffer.

The listener runs on the event loop for every committed event, so it only
appends to that buffer. Each open page looks at the buffer at most every
PACE_S, takes what is new and matches its filter, and is sent the newest ROWS
of it (rendered once for all pages) with a row saying how many it was not
shown. Ingest pays the same for 50 open pages as for none, and memory stays
bounded whatever the rate: a slow page only waits on its own socket (§13)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

from hookbus.bus.events.event import compile_globs
from hookbus.bus.http.answers import int_param
from hookbus.bus.http.keys import BROKER
from hookbus.bus.http.ui.pages import event_row
from hookbus.bus.http.ui.render import fragment

log = logging.getLogger("hookbus.http")

RECENT = 256  # events kept for the live pages
PACE_S = 0.25  # a page looks for new events at most this often
ROWS = 20  # rows a page is sent per look; the others are counted in a gap row
KEEPALIVE_S = 15.0
MAX_STREAMS = 200


class Recent:
    """The newest committed events (seq, type, body), shared by every open page."""

    def __init__(self) -> None:
        self.items: deque[tuple[int, str, bytes]] = deque(maxlen=RECENT)
        self.last = 0
        self.pages = 0
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None

    def __call__(self, type_: str | None, seq: int, body: bytes) -> None:
        """The broker's listener: keep the event, wake the pages waiting for one."""
        if type_ is None:
            return  # a heartbeat
        self.items.append((seq, type_, body))
        self.last = seq
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait_past(self, seq: int, timeout: float) -> bool:
        """Wait until an event after seq is kept (True) or `timeout` passes (False)."""
        if self.last > seq or self.closed:
            return True
        if self._waiter is None or self._waiter.done():
            self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._waiter)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.closed = True
        self._wake()

    def ended(self) -> bool:
        return self.closed

    def since(self, seq: int, wants: Callable[[str], Any] | None) -> tuple[list[tuple[int, bytes]], int, bool]:
        """What came after seq and passes the filter: (the newest ROWS of it, how many more,
        whether older ones already left the buffer uncounted)."""
        fresh = [(s, body) for s, type_, body in self.items if s > seq and (wants is None or wants(type_))]
        lost = bool(self.items) and self.items[0][0] > seq + 1 and seq > 0
        return fresh[-ROWS:], max(0, len(fresh) - ROWS), lost


RECENT_KEY: web.AppKey[Recent] = web.AppKey("ui_recent")


def sse(event: str, html: str) -> bytes:
    data = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {event}\n{data}\n".encode()


@functools.lru_cache(maxsize=RECENT)
def rendered(seq: int, body: bytes) -> bytes:
    """One event's message, rendered once for all open pages."""
    return sse("event", fragment("event_row.html", e=event_row(seq, body)))


def gap(more: int, lost: bool) -> bytes:
    count = f"{more}{' or more' if lost else ''}" if more else "Some"
    return sse("event", f'<tr class="gap"><td colspan="6">{count} more events came meanwhile, not shown live: '
                        f'reload the page to see them all.</td></tr>')


def attach(app: web.Application) -> None:
    """Keep the newest events for the live pages, from the broker's listeners."""
    recent = Recent()
    app[RECENT_KEY] = recent

    async def start(app: web.Application) -> None:
        app[BROKER].attach(recent)

    async def stop(app: web.Application) -> None:
        recent.close()  # ends every live page, so that stopping does not wait on them
        app[BROKER].detach(recent)

    app.on_startup.append(start)
    app.on_shutdown.append(stop)


async def stream(request: web.Request) -> web.StreamResponse:
    recent = request.app[RECENT_KEY]
    if recent.pages >= MAX_STREAMS:
        raise web.HTTPServiceUnavailable(reason=f"at most {MAX_STREAMS} live pages at once")
    pattern = request.query.get("type") or None
    wants = compile_globs([pattern]).match if pattern else None
    # From what the page showed (`after`, its head): what came before the stream opened is sent too.
    seen = min(int_param(request, "after", recent.last, 0, 2**62), recent.last)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    recent.pages += 1
    try:
        await response.write(b"retry: 2000\n\n")
        while True:
            if not await recent.wait_past(seen, KEEPALIVE_S):
                await response.write(b": keep-alive\n\n")
                continue
            if recent.ended():
                break
            rows, more, lost = recent.since(seen, wants)
            seen = recent.last
            if rows or more or lost:
                head = gap(more, lost) if more or lost else b""
                await response.write(head + b"".join(rendered(seq, body) for seq, body in rows))
            await asyncio.sleep(PACE_S)
    except ConnectionResetError:
        pass  # the browser went away
    finally:
        recent.pages -= 1
    return response
