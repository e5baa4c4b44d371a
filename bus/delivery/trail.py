"""The delivery trail, as the runner reports it: what became of each attempt
(delivered, failed, dead, silenced), with the receiver's status and a short,
scrubbed reason. Records wait here and go to the broker together, one TRAIL
per commit interval (cursor.py sends them just before the cursor), never one
message per event: the hot path only appends a tuple to a list.

The bulk, events delivered at their first attempt, goes as runs of
consecutive seqs with one status ([first, last, at of the last, status]):
with per-event records the broker spent about a tenth more CPU per event
(bench/RESULTS.md); a run costs it one row however many events it covers.

Bounded: at most MAX_PENDING records wait while the broker is away; beyond
that, new `delivered` records are counted and dropped (stats
"trail_dropped"), and the rest (failures, dead letters, silences) kept until
twice that; as many first-attempt deliveries wait besides (their runs, once
made, are few).
"""

from __future__ import annotations

import logging
import time

from hookbus.bus.store.base import DELIVERED
from hookbus.bus.transport import protocol
from hookbus.bus.transport.client import BrokerRefused, ControlClient
from hookbus.bus.transport.commands import MAX_TRAIL, REASON_CHARS

log = logging.getLogger("hookbus.subscriber")

MAX_PENDING = 50_000

Record = tuple[int, int, float, str, int | None, str]  # [seq, attempt, at, outcome, status, reason]
Run = tuple[int, int, float, int | None]  # [first_seq, last_seq, at, status]


class Trail:
    def __init__(self, name: str, runner: str, client: ControlClient, stats: dict[str, int]) -> None:
        self.name = name
        self.runner = runner
        self.client = client
        self.stats = stats
        self.pending: list[Record] = []
        self.firsts: list[tuple[int, int | None, float]] = []  # (seq, status, at) delivered at the first attempt
        self.waiting_runs: list[Run] = []  # made of them, not yet sent

    def add(self, seq: int, attempt: int, outcome: str, status: int | None = None, reason: str = "") -> None:
        """Note an attempt's outcome, now. `reason` is redacted by the broker, where TRAIL arrives."""
        if len(self.pending) >= MAX_PENDING and (outcome == DELIVERED or len(self.pending) >= 2 * MAX_PENDING):
            self.stats["trail_dropped"] = self.stats.get("trail_dropped", 0) + 1
            return
        self.pending.append((seq, attempt, time.time(), outcome, status, reason[:REASON_CHARS] if reason else ""))

    def delivered(self, seq: int, attempt: int, status: int | None) -> None:
        """The common case: kept apart, to go as runs."""
        if attempt != 1:
            self.add(seq, attempt, DELIVERED, status)
        elif len(self.firsts) < MAX_PENDING:
            self.firsts.append((seq, status, time.time()))
        else:
            self.stats["trail_dropped"] = self.stats.get("trail_dropped", 0) + 1

    def runs(self) -> list[Run]:
        """The first-attempt deliveries waiting, as runs of consecutive seqs of one status; taken."""
        firsts, self.firsts = self.firsts, []
        firsts.sort(key=lambda f: (f[1] is None, f[1] or 0, f[0]))
        out: list[Run] = []
        for seq, status, at in firsts:
            if out and out[-1][3] == status and out[-1][1] + 1 == seq:
                first, _, last_at, _ = out[-1]
                out[-1] = (first, seq, max(at, last_at), status)
            elif not (out and out[-1][3] == status and out[-1][0] <= seq <= out[-1][1]):  # (a seq twice: once)
                out.append((seq, seq, at, status))
        return out

    async def flush(self, timeout: float = 5.0) -> None:
        """Send what waits, MAX_TRAIL records a message. Raise BrokerUnavailable when the broker
        does not answer (what was not sent waits for the next time); a refusal drops the batch."""
        if self.firsts:
            self.waiting_runs += self.runs()
        while self.pending or self.waiting_runs:
            batch, runs = self.pending[:MAX_TRAIL], self.waiting_runs[:MAX_TRAIL]
            payload = {"name": self.name, "runner": self.runner, "records": batch, "delivered": runs}
            try:
                await self.client.request(protocol.TRAIL, payload, timeout=timeout)
            except BrokerRefused as exc:  # sending it again would not help
                log.warning("subscriber %s: %d record(s) of the delivery trail refused: %s", self.name,
                            len(batch) + len(runs), exc)
            del self.pending[:len(batch)]
            del self.waiting_runs[:len(runs)]
