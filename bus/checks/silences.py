"""The silences the checks know of: which hold a check now, and which have
ended since last asked (a check still down is then announced once more)."""

from __future__ import annotations

from hookbus.bus.events.silences import Silence
from hookbus.bus.settings import Check

KEEP_ENDED_S = 7 * 86400  # ended silences are shown this long (GET /api/silences)


class Silences:
    def __init__(self) -> None:
        self.by_id: dict[int, Silence] = {}
        self._announced: set[int] = set()  # ended, and their still-down checks announced

    def replace(self, silences: list[Silence]) -> None:
        self.by_id = {s.id: s for s in silences}

    def add(self, silence: Silence) -> None:
        self.by_id[silence.id] = silence

    def end(self, silence_id: int, now: float) -> None:
        old = self.by_id.get(silence_id)
        if old is not None:
            self.by_id[silence_id] = Silence(old.id, old.check, old.job, old.type, old.starts_at, min(old.ends_at, now),
                                             old.comment, old.created_at)

    def all(self) -> list[Silence]:
        return sorted(self.by_id.values(), key=lambda s: s.id)

    def active(self, now: float) -> list[Silence]:
        return [s for s in self.all() if s.active(now)]

    def next_end(self, now: float) -> float | None:
        ends = [s.ends_at for s in self.by_id.values() if s.ends_at > now]
        return min(ends) if ends else None

    def ended(self, now: float) -> list[Silence]:
        """The silences that ended by `now` and were not yet asked for; forget the old ones."""
        out = [s for s in self.all() if s.ends_at <= now and s.id not in self._announced]
        self._announced.update(s.id for s in out)
        for old in [s.id for s in self.by_id.values() if s.ends_at < now - KEEP_ENDED_S]:
            del self.by_id[old]
            self._announced.discard(old)
        return out

    def silencing_check(self, check: Check, now: float) -> Silence | None:
        return next((s for s in self.active(now) if s.matches_check(check.name, check.job)), None)
