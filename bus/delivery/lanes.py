"""Lanes: the queues of events handed out for delivery.

One lane per job (one for all events, for an `ordered` kind): a job's events
are delivered one after another in order, different jobs' side by side, at
most `concurrency` at a time. A kind that `takes_many` gets what is queued in
its lane in one call. `inflight` holds the seqs handed out and not yet done:
the cursor stays below them, and at MAX_INFLIGHT there is no room for more.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from hookbus.bus.delivery.attempts import Attempts
from hookbus.bus.delivery.subscriber import Subscriber
from hookbus.bus.events.event import Event

MAX_INFLIGHT = 1000
MAX_BATCH = 500  # events per handle_many() call

Spawn = Callable[[Coroutine[Any, Any, None]], None]


class Lanes:
    def __init__(self, sub: Subscriber, attempts: Attempts, spawn: Spawn) -> None:
        self.sub = sub
        self.attempts = attempts
        self.spawn = spawn
        self.lanes: dict[str, deque[Event]] = {}
        self.inflight: set[int] = set()
        self.generation = 0  # one more at each reset: a lane of an earlier one leaves `inflight` alone
        self.slots = asyncio.Semaphore(1 if sub.ordered else max(1, sub.concurrency))

    def has_room(self) -> bool:
        return len(self.inflight) < MAX_INFLIGHT

    def add(self, event: Event) -> None:
        """Queue an event (its seq set) in its lane, starting the lane if it is idle."""
        self.inflight.add(event.seq or 0)
        key = "" if self.sub.ordered else event.job_key
        lane = self.lanes.get(key)
        if lane is not None:
            lane.append(event)
            return
        self.lanes[key] = deque([event])
        self.spawn(self._run(key, self.generation))

    def reset(self) -> None:
        """Forget what is queued (the cursor was moved back): the head of each
        lane is being delivered; it may finish."""
        self.generation += 1
        for lane in self.lanes.values():
            while len(lane) > 1:
                lane.pop()
        self.inflight.clear()

    async def _run(self, key: str, generation: int) -> None:
        lane = self.lanes[key]
        while lane:
            if self._takes_many(lane) and await self._deliver_many(lane, generation):
                continue
            # Otherwise (or when taking them together failed) the first event on its own, with retries.
            event = lane[0]
            async with self.slots:
                await self.attempts.deliver(event)
            lane.popleft()
            if generation == self.generation:
                self.inflight.discard(event.seq or 0)
        if self.lanes.get(key) is lane:
            del self.lanes[key]

    def _takes_many(self, lane: deque[Event]) -> bool:
        """Whether to try the lane's events in one call: the kind takes them so, and no retries are pending."""
        return len(lane) > 1 and self.sub.takes_many and not self.attempts.retry_state

    async def _deliver_many(self, lane: deque[Event], generation: int) -> bool:
        """Try the events at the front of the lane in one call; on success take them off it."""
        batch = [lane[i] for i in range(min(len(lane), MAX_BATCH))]
        async with self.slots:
            handled = await self.attempts.deliver_many(batch)
        if not handled:
            return False
        if generation != self.generation:  # reset left only the head in the lane
            lane.popleft()
            return True
        for event in batch:
            lane.popleft()
            self.inflight.discard(event.seq or 0)
        return True
