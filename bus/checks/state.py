"""One check's state and its transitions (DESIGN §10), as plain functions of
the check, the state, a run's report and the time: no clock, no I/O.

States: `new` (never seen), `up`, `started`, `late` (past due, within grace),
`down` (reason `missed`, `running_too_long` or `failed`), `paused`.

Every change that is announced comes back as an `Alert` whose `key` names the
change itself (the due time that was missed, the seq of the run that failed or
recovered, the reminder's number): the engine makes it the event's id, so the
journal, which keeps one event per (source, id), stores each announcement once
however often the same history is evaluated again (a restart, a kill -9).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from hookbus.bus.events.text import cut_end
from hookbus.bus.events.vocabulary import Outcome


class Status(StrEnum):
    NEW = "new"
    UP = "up"
    STARTED = "started"
    LATE = "late"
    DOWN = "down"
    PAUSED = "paused"


class Why(StrEnum):
    MISSED = "missed"
    RUNNING_TOO_LONG = "running_too_long"
    FAILED = "failed"


GOOD = (Outcome.SUCCESS, Outcome.WARNING)
ERROR_CHARS = 1000  # of a failed run's error, kept and repeated in every announcement


class Spec(Protocol):
    """What a check says it expects (bus.settings.Check)."""

    @property
    def name(self) -> str: ...
    @property
    def grace(self) -> float: ...
    @property
    def max_runtime(self) -> float | None: ...
    @property
    def down_after_failures(self) -> int: ...
    @property
    def repeat(self) -> float | None: ...


# The next time a run is due after a run at `after` (epoch seconds), or None.
Due = Callable[[float], float | None]


@dataclass(slots=True)
class Run:
    """What a backup.job.started / backup.job.finished event says, for a check."""

    seq: int
    at: float  # when hookbus accepted it
    started: bool  # a start; else a finish
    job_id: str | None = None
    outcome: str | None = None
    error: str | None = None


@dataclass(slots=True)
class State:
    status: Status = Status.NEW
    reason: Why | None = None
    expected_at: float | None = None  # the due time waited for
    last_seen: float | None = None
    last_outcome: str | None = None
    last_error: str | None = None
    started_at: float | None = None  # of the run under way
    job_id: str | None = None  # of the last run seen
    failures: int = 0  # failed runs in a row
    down_since: float | None = None
    down_key: str | None = None  # the announcement's key, for its reminders
    reminders: int = 0
    paused_from: str | None = None  # the status a pause interrupted

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> State:
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        state = cls(**known)
        state.status = Status(state.status)
        state.reason = Why(state.reason) if state.reason else None
        return state


@dataclass(slots=True)
class Alert:
    """A change to announce: `backup.check.down` (up=False) or `backup.check.up`."""

    key: str
    up: bool
    at: float
    fields: dict[str, Any] = field(default_factory=dict)


def on_run(spec: Spec, state: State, run: Run, due: Due) -> list[Alert]:
    """Apply a run's report (after `advance` to its time); return what to announce."""
    if state.status is Status.PAUSED:
        _note(state, run)
        return []
    if run.started:
        _note(state, run)
        state.started_at = run.at
        state.expected_at = due(run.at)  # this run answers the due time; the next is counted from it
        if state.status is not Status.DOWN:
            state.status = Status.STARTED
        return []
    alerts: list[Alert] = []
    _note(state, run)
    state.started_at = None
    state.expected_at = due(run.at)
    if run.outcome in GOOD:
        state.failures = 0
        state.last_error = None
        if state.status is Status.DOWN:
            assert state.down_since is not None
            alerts.append(Alert(f"up/{run.seq}", True, run.at, {"down_since": state.down_since, "outcome": run.outcome,
                                                                "job_id": run.job_id}))
        state.status, state.reason, state.down_since, state.down_key, state.reminders = Status.UP, None, None, None, 0
        return alerts
    state.failures += 1
    state.last_error = cut_end(run.error, ERROR_CHARS) if run.error else None
    if state.status is not Status.DOWN and state.failures >= spec.down_after_failures:
        return [_down(state, Why.FAILED, f"down/failed/{run.seq}", run.at)]
    if state.status is not Status.DOWN:
        state.status = Status.UP
    return alerts


def _note(state: State, run: Run) -> None:
    state.last_seen = run.at
    state.job_id = run.job_id or state.job_id
    if not run.started:
        state.last_outcome = run.outcome


def _down(state: State, why: Why, key: str, at: float) -> Alert:
    state.status, state.reason, state.down_since, state.down_key, state.reminders = Status.DOWN, why, at, key, 0
    return Alert(key, False, at)


class Change(StrEnum):
    LATE = "late"
    MISSED = "missed"
    TOO_LONG = "running_too_long"
    REMINDER = "reminder"


def next_change(spec: Spec, state: State) -> tuple[float, Change] | None:
    """When `advance` next has something to do for this check, and what; or None."""
    if state.status is Status.DOWN:
        if spec.repeat and state.down_since is not None:
            return state.down_since + spec.repeat * (state.reminders + 1), Change.REMINDER
        return None
    options: list[tuple[float, Change]] = []
    if state.status is Status.UP and state.expected_at is not None:
        options.append((state.expected_at, Change.LATE))
    if state.status in (Status.LATE, Status.STARTED) and state.expected_at is not None:
        # Under way for so long that the next run could not start either: missed too.
        options.append((state.expected_at + spec.grace, Change.MISSED))
    if state.status is Status.STARTED and spec.max_runtime and state.started_at is not None:
        options.append((state.started_at + spec.max_runtime, Change.TOO_LONG))
    return min(options) if options else None


def advance(spec: Spec, state: State, now: float) -> list[Alert]:
    """Apply what falls due up to `now`; return what to announce."""
    alerts: list[Alert] = []
    while (change := next_change(spec, state)) is not None and change[0] <= now:
        alert = _change(state, *change)
        if alert is not None:
            alerts.append(alert)
    return alerts


def _change(state: State, when: float, change: Change) -> Alert | None:
    if change is Change.REMINDER:
        state.reminders += 1
        return Alert(f"{state.down_key}/reminder/{state.reminders}", False, when, {"reminder": state.reminders})
    if change is Change.LATE:
        state.status = Status.LATE
        return None
    if change is Change.TOO_LONG:
        return _down(state, Why.RUNNING_TOO_LONG, f"down/running_too_long/{state.job_id or rfc3339_key(when)}", when)
    assert state.expected_at is not None
    return _down(state, Why.MISSED, f"down/missed/{rfc3339_key(state.expected_at)}", when)


def rfc3339_key(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y%m%dT%H%M%SZ")


def pause(state: State) -> bool:
    """Pause a check; False when it already was."""
    if state.status is Status.PAUSED:
        return False
    state.paused_from = state.status.value
    state.status = Status.PAUSED
    return True


def resume(state: State, now: float, due: Due) -> bool:
    """Resume a paused check: it waits for its next due time counted from now
    (`new` when it has never seen a run); False when it was not paused."""
    if state.status is not Status.PAUSED:
        return False
    state.status = Status.NEW if state.last_seen is None else Status.UP
    state.reason, state.down_since, state.down_key, state.reminders = None, None, None, 0
    state.started_at, state.paused_from = None, None
    state.expected_at = due(now) if state.status is Status.UP else None
    return True
