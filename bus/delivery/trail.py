"""The delivery trail, as the runner reports it: what became of each attempt
(delivered, failed, dead, silenced), with the receiver's status and a short,
scrubbed reason. Records wait here and go to the broker together, one TRAIL
per commit interval (cursor.py sends them just before the cursor), never one
message per event: the hot path only appends a tuple to a list.

Bounded: at most MAX_PENDING records wait while the broker is away; beyond
that, new `delivered` records are counted and dropped (stats
"trail_dropped"), and the rest (failures, dead letters, silences) kept until
twice that.
"""

from __future__ import annotations

import logging
import time

from hookbus.bus.secrets import scrub
from hookbus.bus.store.base import DELIVERED
from hookbus.bus.transport import protocol
from hookbus.bus.transport.client import BrokerRefused, ControlClient
from hookbus.bus.transport.commands import MAX_TRAIL, REASON_CHARS

log = logging.getLogger("hookbus.subscriber")

MAX_PENDING = 50_000

Record = tuple[int, int, float, str, int | None, str]  # [seq, attempt, at, outcome, status, reason]


class Trail:
    def __init__(self, name: str, runner: str, client: ControlClient, stats: dict[str, int]) -> None:
        self.name = name
        self.runner = runner
        self.client = client
        self.stats = stats
        self.pending: list[Record] = []

    def add(self, seq: int, attempt: int, outcome: str, status: int | None = None, reason: str = "") -> None:
        """Note an attempt's outcome, now. `reason` is scrubbed here (and again by the broker)."""
        if len(self.pending) >= MAX_PENDING and (outcome == DELIVERED or len(self.pending) >= 2 * MAX_PENDING):
            self.stats["trail_dropped"] = self.stats.get("trail_dropped", 0) + 1
            return
        self.pending.append((seq, attempt, time.time(), outcome, status, scrub(reason)[:REASON_CHARS] if reason else ""))

    def delivered(self, seq: int, attempt: int, status: int | None) -> None:
        """The common case, spared the checks of `add` while there is room."""
        if len(self.pending) < MAX_PENDING:
            self.pending.append((seq, attempt, time.time(), DELIVERED, status, ""))
        else:
            self.add(seq, attempt, DELIVERED, status)

    async def flush(self, timeout: float = 5.0) -> None:
        """Send what waits, MAX_TRAIL records a message. Raise BrokerUnavailable when the broker
        does not answer (what was not sent waits for the next time); a refusal drops the batch."""
        while self.pending:
            batch = self.pending[:MAX_TRAIL]
            payload = {"name": self.name, "runner": self.runner, "records": batch}
            try:
                await self.client.request(protocol.TRAIL, payload, timeout=timeout)
            except BrokerRefused as exc:  # sending it again would not help
                log.warning("subscriber %s: %d record(s) of the delivery trail refused: %s", self.name, len(batch), exc)
            del self.pending[:len(batch)]
