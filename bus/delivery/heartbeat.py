"""The subscriber's heartbeat: a PING to the broker every `heartbeat` seconds,
with its counters. The answer says how far the journal has got, whether the
cursor was moved (`hookbus replay --from`: start over from there), and whether
dead letters wait to be replayed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from hookbus.bus.delivery.cursor import Cursor
from hookbus.bus.delivery.gaps import Position
from hookbus.bus.delivery.lanes import Lanes
from hookbus.bus.delivery.replays import Replays
from hookbus.bus.settings import BusSettings
from hookbus.bus.transport import protocol
from hookbus.bus.transport.client import BrokerUnavailable, ControlClient

log = logging.getLogger("hookbus.subscriber")


class Heartbeat:
    def __init__(self, name: str, runner: str, bus: BusSettings, client: ControlClient, stats: dict[str, int],
                 position: Position, lanes: Lanes, cursor: Cursor, replays: Replays,
                 hold: Callable[[list[dict[str, Any]]], None]) -> None:
        self.name = name
        self.runner = runner  # the broker's lease on this name (journal.take_lease)
        self.bus = bus
        self.client = client
        self.stats = stats
        self.position = position
        self.lanes = lanes
        self.cursor = cursor
        self.replays = replays
        self.hold = hold  # the broker's silences, with every answer

    async def loop(self) -> None:
        while True:
            payload = {"name": self.name, "runner": self.runner, "stats": {**self.stats, "inflight": len(self.lanes.inflight)}}
            try:
                info, _ = await self.client.request(protocol.PING, payload, timeout=self.bus.heartbeat * 3)
            except BrokerUnavailable:
                log.warning("subscriber %s: broker at %s not answering heartbeats", self.name, self.client.where)
                continue
            self.position.target = max(self.position.target, int(info["head"]))
            if int(info["epoch"]) != self.cursor.epoch:
                self._reset(int(info["epoch"]), int(info["cursor"]))
            if info["replays"]:
                self.replays.start()
            self.hold(info.get("silences", []))
            await asyncio.sleep(self.bus.heartbeat)

    def _reset(self, epoch: int, cursor: int) -> None:
        """The cursor was moved by `hookbus replay --from`: start over from there."""
        log.info("subscriber %s: replaying from seq %d", self.name, cursor + 1)
        self.lanes.reset()
        self.cursor.epoch = epoch
        self.position.restart_at(cursor)
        self.cursor.committed = cursor
