"""Runs that succeeded but do not look like the job's other runs (DESIGN §10):
a database dump that "succeeded" in seconds is a failure nobody saw.

Per job, the last good runs' `duration_s` and data added are kept; from the
fifth on, a good run below a third or above three times the median of the
runs before it is an anomaly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median
from typing import Any

KEEP = 20  # good runs kept per job
FROM = 5  # runs needed before a run is judged
FACTOR = 3.0

METRICS = ("duration_s", "data_added")


@dataclass(slots=True)
class Anomaly:
    metric: str
    value: float
    median: float
    runs: int


@dataclass(slots=True)
class History:
    seq: int = 0  # the last run taken: a run seen again (after a restart) is not taken twice
    values: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "values": self.values}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> History:
        values = raw.get("values")
        return cls(int(raw.get("seq") or 0), dict(values) if isinstance(values, dict) else {})


def measures(data: dict[str, Any]) -> dict[str, float]:
    """A finished run's measures: its duration, and the data it added (restic's and
    Backrest's `stats.data_added`) when it says."""
    found: dict[str, float] = {}
    duration = data.get("duration_s")
    if isinstance(duration, (int, float)) and not isinstance(duration, bool) and duration >= 0:
        found["duration_s"] = float(duration)
    stats = data.get("stats")
    added = stats.get("data_added") if isinstance(stats, dict) else None
    if isinstance(added, (int, float)) and not isinstance(added, bool) and added >= 0:
        found["data_added"] = float(added)
    return found


def judge(history: History, seq: int, run: dict[str, float]) -> list[Anomaly]:
    """Take a good run into the job's history; return how it stands out from the runs before it."""
    if seq <= history.seq:
        return []
    history.seq = seq
    found = []
    for metric, value in run.items():
        before = history.values.setdefault(metric, [])
        if len(before) >= FROM:
            middle = median(before)
            if middle > 0 and (value < middle / FACTOR or value > middle * FACTOR):
                found.append(Anomaly(metric, value, middle, len(before)))
        before.append(value)
        del before[:-KEEP]
    return found
