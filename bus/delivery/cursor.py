"""The subscriber's cursor at the broker: every seq up to it is done. It moves
only past events whose side effect succeeded (or was dead-lettered): it stays
below every event still being delivered, and below every event the subscriber
holds (a digest not yet sent), so a crash delivers those again. The delivery
trail (trail.py) goes with it, one message per commit interval.
"""

from __future__ import annotations

import asyncio
import logging

from hookbus.bus.delivery.gaps import Position
from hookbus.bus.delivery.lanes import Lanes
from hookbus.bus.delivery.subscriber import Subscriber
from hookbus.bus.delivery.trail import Trail
from hookbus.bus.transport import protocol
from hookbus.bus.transport.client import BrokerUnavailable, ControlClient

log = logging.getLogger("hookbus.subscriber")

COMMIT_INTERVAL = 0.2


class Cursor:
    def __init__(self, name: str, client: ControlClient, sub: Subscriber, position: Position, lanes: Lanes,
                 trail: Trail) -> None:
        self.name = name
        self.client = client
        self.sub = sub
        self.position = position
        self.lanes = lanes
        self.trail = trail
        self.committed = -1  # as the broker last confirmed it
        self.epoch = 0  # the broker's count of moves by `hookbus replay --from`: an ACK of an older one is refused

    def value(self) -> int:
        high = self.position.high
        low = min(min(self.lanes.inflight, default=high + 1), min(self.sub.held(), default=high + 1))
        return low - 1

    async def commit(self, timeout: float = 5.0) -> None:
        """Send the delivery trail, then the cursor: a crash between them redelivers, never
        leaves a delivered event without its record."""
        cursor = self.value()  # every event up to it has its record waiting in the trail
        await self.trail.flush(timeout)
        if cursor <= self.committed:
            return
        payload = {"name": self.name, "cursor": cursor, "epoch": self.epoch}
        info, _ = await self.client.request(protocol.ACK, payload, timeout=timeout)
        if info.get("ok"):
            self.committed = cursor

    async def commit_loop(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL)
            try:
                await self.commit()
            except BrokerUnavailable as exc:
                log.debug("subscriber %s: cursor not saved: %s", self.name, exc)
