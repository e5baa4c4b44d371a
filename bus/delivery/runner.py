"""Runs one subscriber: catch up from its cursor, follow the live bus, deliver
with retries, dead-letter what cannot be delivered, and move the cursor only
past events whose side effect succeeded.

The parts, each in a module of its own: where the subscriber is in the
journal and filling gaps (gaps.py), the live stream (live.py), the lanes
events are delivered in (lanes.py), the attempts at delivering one, with
retries and dead letters (attempts.py, by the policy in retry.py), the
handler timeout (deadlines.py), the cursor (cursor.py), the heartbeat
(heartbeat.py) and dead-letter replays (replays.py). This module starts them
and stops them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

import zmq.asyncio

from hookbus.bus.delivery.attempts import Attempts
from hookbus.bus.delivery.cursor import Cursor
from hookbus.bus.delivery.deadlines import Deadlines
from hookbus.bus.delivery.gaps import Position
from hookbus.bus.delivery.heartbeat import Heartbeat
from hookbus.bus.delivery.lanes import Lanes
from hookbus.bus.delivery.live import LiveFeed, SocketFollower, follow_feed
from hookbus.bus.delivery.replays import Replays
from hookbus.bus.delivery.subscriber import DeliveryContext, Subscriber, SubscriberConfig, wants
from hookbus.bus.delivery.trail import Trail
from hookbus.bus.events.event import Event
from hookbus.bus.events.silences import Silence, silencing
from hookbus.bus.settings import BusSettings
from hookbus.bus.store.base import SILENCED
from hookbus.bus.store.journal import runner_name
from hookbus.bus.transport import protocol
from hookbus.bus.transport.broker import DELIVERY_FAILED
from hookbus.bus.transport.client import BrokerUnavailable, ControlClient

__all__ = ["LiveFeed", "SubscriberRunner"]

log = logging.getLogger("hookbus.subscriber")


class SubscriberRunner:
    def __init__(self, config: SubscriberConfig, subscriber: Subscriber, bus: BusSettings,
                 ctx: zmq.asyncio.Context | None = None, feed: LiveFeed | None = None) -> None:
        self.config = config
        self.sub = subscriber
        self.bus = bus
        self.name = config.name
        self.ctx = ctx or zmq.asyncio.Context.instance()
        # In a node's own process, its own broker (the first endpoint); alone, whichever node answers.
        self.client = ControlClient(bus, self.ctx, [bus.own_control] if feed is not None else None)
        self.feed = feed
        self.runner = runner_name()  # the broker's lease on this name (journal.take_lease)
        self.stats: dict[str, int] = {"delivered": 0, "failed_attempts": 0, "dead_lettered": 0, "skipped": 0,
                                      "silenced": 0}
        self.silences: list[Silence] = []  # the broker's, as of its last answer
        self._tasks: set[asyncio.Task[Any]] = set()
        self.drain_grace = 5.0  # on a stop, deliveries in progress may finish this long (0: a lease lost)
        self.deadlines = Deadlines(subscriber.handler_timeout)
        self.trail = Trail(self.name, self.runner, self.client, self.stats)
        self.attempts = Attempts(config, subscriber, self.client, self.deadlines, self.stats, self.trail)
        self.lanes = Lanes(subscriber, self.attempts, self.spawn)
        events = config.events if config.events is not None else subscriber.default_events
        self.position = Position(self.name, events, self.client, self._take, self.lanes.has_room)
        self.ready = self.position.ready  # set once caught up with the head seen at start
        self.cursor = Cursor(self.name, self.client, subscriber, self.position, self.lanes, self.trail)
        self.replays = Replays(self.name, self.client, subscriber, self.deadlines, self.spawn, self.trail, self.stats)
        self.heartbeat = Heartbeat(self.name, self.runner, bus, self.client, self.stats, self.position, self.lanes,
                                   self.cursor, self.replays, self.hold)
        subscriber.bind(DeliveryContext(self.name, publish=self.publish, give_up=self.attempts.give_up))

    # -- life cycle ----------------------------------------------------------

    async def run(self) -> None:
        await self.sub.start()
        try:
            if self.feed is not None:
                # Listen before saying hello: whatever is published meanwhile raises the target.
                self.feed.attach(self.position.on_live)
            await self._hello()
            background = [asyncio.create_task(self.cursor.commit_loop()), asyncio.create_task(self.heartbeat.loop()),
                          asyncio.create_task(self.deadlines.watch())]
            try:
                await self._follow()
            finally:
                for task in background:
                    task.cancel()
                if self.feed is not None:
                    self.feed.detach(self.position.on_live)
        finally:
            await self._drain()
            await self.sub.close()
            self.client.close()

    async def _hello(self) -> None:
        while True:
            try:
                info, _ = await self.client.request(protocol.HELLO, {"name": self.name, "runner": self.runner}, timeout=5.0)
                break
            except BrokerUnavailable:
                log.warning("subscriber %s: broker at %s not reachable yet; retrying", self.name, self.client.where)
        self.position.greet(int(info["cursor"]), int(info["head"]))
        self.cursor.committed = self.position.high
        self.cursor.epoch = int(info["epoch"])
        self.attempts.retry_state = {int(s): (int(a), float(t)) for s, a, t in info["retries"]}
        self.hold(info.get("silences", []))
        await self.sub.joined(int(info.get("journal", 0)), self.position.target)
        log.info("subscriber %s (%s): starting after seq %d, head %d", self.name, self.config.kind,
                 self.position.high, self.position.target)

    async def _follow(self) -> None:
        if self.feed is not None:
            await follow_feed(self.position)
        else:
            await SocketFollower(self.position, self.bus, self.ctx, self.stats).follow()

    async def _drain(self) -> None:
        """On shutdown, let deliveries in progress finish briefly, then save the cursor."""
        pending = [t for t in self._tasks if not t.done()]
        if pending and self.drain_grace > 0:
            await asyncio.wait(pending, timeout=self.drain_grace)
        if pending:
            for task in pending:
                task.cancel()
        try:
            await self.cursor.commit(timeout=2.0)
        except (BrokerUnavailable, asyncio.CancelledError):
            pass

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- what the subscriber is given ------------------------------------------

    def _take(self, event: Event) -> None:
        """An event the journal has for this subscriber: deliver it, unless its `when` or its origin rule it out."""
        if not wants(self.config, event) or self._is_own_failure(event):
            self.stats["skipped"] += 1
            return
        if self.sub.silenceable and (silence := silencing(self.silences, event.type, event.data, time.time())):
            self.stats["silenced"] += 1
            until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(silence.ends_at))
            log.debug("subscriber %s: seq %s (%s) not sent: silence %d holds it until %s", self.name, event.seq,
                      event.type, silence.id, until)
            self.trail.add(event.seq or 0, 0, SILENCED, None, f"silence {silence.id} until {until}")
            return
        self.lanes.add(event)

    def hold(self, silences: list[dict[str, Any]]) -> None:
        """Take the broker's silences (HELLO and PING answers)."""
        self.silences = [Silence(**s) for s in silences]

    def _is_own_failure(self, event: Event) -> bool:
        """A target that just failed would fail its own alert too: that goes elsewhere."""
        return event.type == DELIVERY_FAILED and event.fields.get("subscriber") == self.name

    async def publish(self, events: list[Event]) -> list[dict[str, Any]]:
        """Publish events on behalf of the subscriber; return once they are durable.
        Raise BrokerUnavailable if the broker does not answer in time."""
        return await self.client.publish([event.to_json() for event in events])
