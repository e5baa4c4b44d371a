"""Where a subscriber is in the journal, and filling the gaps up to its head.

The live stream is a wake-up channel: every seq is seen on it, so a gap (a
drop at the high-water mark, a broker restart) shows at once and is filled
from the journal. Live events that arrive while the subscriber is behind (it is
reading the journal, or has no room) are kept, up to a bound, so that it reads
from the journal only what it missed and then goes on from what it kept:
without them, a subscriber that fell behind under steady load would read
everything after from the journal, one round trip per batch, and never get
back to the live stream while the load lasted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from hookbus.bus.events.event import Event, compile_globs, from_stored
from hookbus.bus.transport import protocol
from hookbus.bus.transport.client import BrokerUnavailable, ControlClient

log = logging.getLogger("hookbus.subscriber")

FETCH_LIMIT = 500
KEEP_EVENTS = 10_000  # live events kept while behind: at most this many ...
KEEP_BYTES = 8 << 20  # ... and this many bytes of them


class Position:
    """`high`: every seq up to it has been handed out or skipped; `target`: the
    journal's head as last heard of. Events are handed out to `take`, while
    `has_room()`."""

    def __init__(self, name: str, events: list[str], client: ControlClient, take: Callable[[Event], None],
                 has_room: Callable[[], bool]) -> None:
        self.name = name
        self.events = events
        self.match_type = compile_globs(events).match
        self.client = client
        self.take = take
        self.has_room = has_room
        self.greeted = False  # the broker has told the cursor: live events can be taken
        self.high = 0
        self.target = 0
        self.kept: deque[tuple[int, str, bytes]] = deque()  # live events after `high`, consecutive seqs
        self.kept_bytes = 0
        self.kept_full = False  # the bound was reached: keep nothing more until they are taken
        self.wake = asyncio.Event()  # the target moved while following the feed
        self.ready = asyncio.Event()  # set once caught up with the head seen at start

    def greet(self, cursor: int, head: int) -> None:
        """The broker's answer to hello: go on after `cursor`, up to at least `head`."""
        self.high = cursor
        self.target = max(self.target, head)
        self.greeted = True

    def restart_at(self, cursor: int) -> None:
        """The cursor was moved (`hookbus replay --from`): go on after it."""
        self._drop_kept()
        self.high = cursor
        self.wake.set()

    # -- the live stream ---------------------------------------------------------

    def on_live(self, type_: str | None, seq: int, body: bytes) -> None:
        """One message of the live stream: an event (`type_`, `seq`, `body`) or a
        heartbeat (`type_` None, `seq` the journal head)."""
        if type_ is None or not self.greeted:  # before the cursor is known, an event only says how far to read
            self.heard_of(seq)
        elif seq <= self.high:
            return
        elif seq == self.high + 1 and self.high >= self.target and self.has_room():
            self.high = self.target = seq
            self._accept(seq, type_, body)
        else:  # behind, a gap, or no room: keep it for when there is, and read what is missing from the journal
            self._keep(seq, type_, body)
            self.heard_of(seq)

    def heard_of(self, seq: int) -> None:
        """The journal has got at least to `seq`: read up to there."""
        if seq > self.target:
            self.target = seq
            self.wake.set()

    def _keep(self, seq: int, type_: str, body: bytes) -> None:
        """Keep a live event that cannot be taken yet, if it follows those kept."""
        if self.kept and seq != self.kept[-1][0] + 1:
            if self.kept_full:
                return  # what follows the kept events will be read from the journal
            self._drop_kept()  # a gap in the live stream: what comes after it is what will be needed
        if len(self.kept) < KEEP_EVENTS and self.kept_bytes + len(body) <= KEEP_BYTES:
            self.kept.append((seq, type_, body))
            self.kept_bytes += len(body)
        else:
            self.kept_full = True

    def _take_kept(self) -> None:
        while self.kept and self.has_room() and self.kept[0][0] <= self.high + 1:
            seq, type_, body = self.kept.popleft()
            self.kept_bytes -= len(body)
            if seq == self.high + 1:
                self.high = seq
                self._accept(seq, type_, body)
        if not self.kept:
            self.kept_full = False

    def _drop_kept(self) -> None:
        self.kept.clear()
        self.kept_bytes = 0
        self.kept_full = False

    # -- catching up -------------------------------------------------------------

    async def catch_up(self) -> None:
        """While behind the head and there is room, go on from the live events
        kept, else read from the journal."""
        while self.high < self.target and self.has_room():
            if self.kept and self.kept[0][0] <= self.high + 1:
                self._take_kept()
            else:
                await self._fetch()
        if self.high >= self.target:
            self.ready.set()

    async def _fetch(self) -> None:
        try:
            info, bodies = await self.client.request(
                protocol.FETCH, {"after": self.high, "limit": FETCH_LIMIT, "events": self.events},
                timeout=10.0,
            )
        except BrokerUnavailable as exc:
            log.warning("subscriber %s: %s", self.name, exc)
            return
        for seq, body in zip(info["seqs"], bodies, strict=False):
            if seq > self.high:
                self._accept(seq, None, body)
        self.high = max(self.high, int(info["scanned_to"]))
        self._heard_of_head(int(info["head"]))

    def _heard_of_head(self, head: int) -> None:
        """The broker's own word on its head, after a FETCH: a live message that
        claimed more (no broker sends one) is forgotten, or every pass would FETCH again."""
        if self.high >= head and self.target > head:
            (log.warning if self.target > head + 10_000 else log.debug)(
                "subscriber %s: the live stream announced seq %d but the broker's head is %d; going on from there",
                self.name, self.target, head)
            self.target = head
        else:
            self.target = max(self.target, head)

    def _accept(self, seq: int, type_: str | None, body: bytes) -> None:
        """Hand out the event at `seq` (`type_` given: a live copy, not yet checked against `events`)."""
        if type_ is not None and not self.match_type(type_):
            return
        try:
            event = from_stored(body)
        except (ValueError, KeyError, AttributeError) as exc:
            if type_ is not None and self.high == seq:  # a live copy: read the journal's instead
                log.warning("subscriber %s: live seq %d is not a valid event (%s); reading it from the journal",
                            self.name, seq, exc)
                self.high = seq - 1
                return
            log.error("subscriber %s: seq %d is not a valid event (%s); skipped", self.name, seq, exc)  # stored events are valid
            return
        event.seq = seq
        self.take(event)
