"""The silences the checks know of: which hold a check now, and which have
ended since last asked (a check still down is then announced once more)."""

from __future__ import annotations

import dataclasses

from hookbus.bus.events.silences import Silence, silencing
from hookbus.bus.settings import Check

KEEP_ENDED_S = 7 * 86400  # ended silences are shown this long (GET /api/silences)


class Silences:
    def __init__(self) -> None:
        self.by_id: dict[int, Silence] = {}
        self._announced: set[int] = set()  # ended, and their still-down checks announced

    def replace(self, silences: list[Silence]) -> None:
        self.by_id = {s.id: s for s in silences}

    def merge(self, silences: list[Silence]) -> None:
        """Take in silences another node added or ended (several nodes, DESIGN §12): each as stored."""
        for silence in silences:
            self.by_id[silence.id] = silence

    def add(self, silence: Silence) -> None:
        self.by_id[silence.id] = silence

    def end(self, silence_id: int, now: float) -> None:
        old = self.by_id.get(silence_id)
        if old is not None:
            self.by_id[silence_id] = dataclasses.replace(old, ends_at=min(old.ends_at, now))

    def all(self) -> list[Silence]:
        return sorted(self.by_id.values(), key=lambda s: s.id)

    def active(self, now: float) -> list[Silence]:
        return [s for s in self.all() if s.active(now)]

    def next_end(self, now: float) -> float | None:
        ends = [s.ends_at for s in self.by_id.values() if s.ends_at > now]
        return min(ends) if ends else None

    def ended(self, now: float) -> list[Silence]:
        """The silences that ended by `now` whose end is not yet announced; forget the old ones."""
        out = [s for s in self.all() if s.ends_at <= now and s.id not in self._announced]
        for old in [s.id for s in self.by_id.values() if s.ends_at < now - KEEP_ENDED_S]:
            del self.by_id[old]
            self._announced.discard(old)
        return out

    def announced(self, ended: list[Silence]) -> None:
        """Their ends are announced (published): not again."""
        self._announced.update(s.id for s in ended)

    def running(self, now: float) -> list[Silence]:
        """Not ended yet: what subscriber runners are told to hold for."""
        return [s for s in self.all() if s.ends_at > now]

    def holding(self, check: Check, now: float) -> Silence | None:
        """The active silence that holds this check's announcements, if any."""
        return silencing(self.active(now), "backup.check.down", {"check": check.name, "job": check.job}, now)
