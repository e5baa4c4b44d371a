"""Silences (DESIGN §10): maintenance windows during which notifications of what
a silence matches are held. A silence names a check, a job, an event type glob,
or several of these (then all must match)."""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Silence:
    id: int
    check: str | None
    job: str | None
    type: str | None
    starts_at: float
    ends_at: float
    comment: str
    created_at: float

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, type_: str, data: Any) -> bool:
        """Whether an event of this type and data is one this silence holds."""
        fields = data if isinstance(data, dict) else {}
        if self.type is not None and not fnmatch.fnmatchcase(type_, self.type):
            return False
        if self.job is not None and fields.get("job") != self.job:
            return False
        return self.check is None or fields.get("check") == self.check

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def silencing(silences: list[Silence], type_: str, data: Any, now: float) -> Silence | None:
    """The first active silence that holds this event, or None."""
    return next((s for s in silences if s.active(now) and s.matches(type_, data)), None)
