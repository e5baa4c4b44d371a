"""Replays of dead letters (`hookbus replay --dead-letters`): the broker says
some are queued; the subscriber takes them, hands each to `handle()` once, and
says how it went. One that fails again goes back to the dead letters.
"""

from __future__ import annotations

import logging
from typing import Any

from hookbus.bus.delivery.control import tell
from hookbus.bus.delivery.deadlines import Deadlines
from hookbus.bus.delivery.lanes import Spawn
from hookbus.bus.delivery.retry import describe
from hookbus.bus.delivery.subscriber import Subscriber, listen_for_answer, stop_listening
from hookbus.bus.delivery.trail import Trail
from hookbus.bus.events.event import from_stored
from hookbus.bus.store.base import DEAD, DELIVERED
from hookbus.bus.transport import protocol
from hookbus.bus.transport.client import BrokerUnavailable, ControlClient

log = logging.getLogger("hookbus.subscriber")


class Replays:
    def __init__(self, name: str, client: ControlClient, sub: Subscriber, deadlines: Deadlines, spawn: Spawn,
                 trail: Trail, stats: dict[str, int]) -> None:
        self.name = name
        self.stats = stats  # the runner's: a replay delivered counts as delivered in `hookbus status`
        self.client = client
        self.sub = sub
        self.deadlines = deadlines
        self.spawn = spawn
        self.trail = trail
        self.running = False

    def start(self) -> None:
        """Replay what is queued, unless a replay is under way."""
        if not self.running:
            self.running = True
            self.spawn(self._replay())

    async def _replay(self) -> None:
        try:
            info, bodies = await self.client.request(protocol.REPLAYS, {"name": self.name})
            for item, body in zip(info["items"], bodies, strict=False):
                await self._one(item, body)
        except BrokerUnavailable as exc:
            log.warning("subscriber %s: replay postponed: %s", self.name, exc)
        finally:
            self.running = False

    async def _one(self, item: dict[str, Any], body: bytes) -> None:
        event = from_stored(body)
        event.seq = int(item["seq"])
        answer, token = listen_for_answer()
        try:
            await self.deadlines.timed(self.sub.handle(event))
            ok, error = True, ""
        except Exception as exc:  # a replay that fails goes back to the dead letters
            ok, error = False, describe(exc)
        finally:
            stop_listening(token)
        # On the trail, the attempt after the dead letter's.
        self.trail.add(event.seq, int(item.get("attempts", 0)) + 1, DELIVERED if ok else DEAD, answer.status, error)
        self.stats["delivered" if ok else "failed_attempts"] += 1
        log.info("subscriber %s: replay of dead letter %s (seq %s): %s", self.name, item["id"], item["seq"],
                 "delivered" if ok else error)
        await tell(self.client, self.name, protocol.REPLAYED, {"id": item["id"], "ok": ok, "error": error}, timeout=None)
