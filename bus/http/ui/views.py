"""What the pages show, shaped from the data the API serves: statuses in words
with their symbol, times as UTC for `<time>`, the 30-day strip of each job.
Plain functions of their arguments, tested without a server."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hookbus.bus.checks import schedule
from hookbus.bus.events.times import format_duration_short, parse_time
from hookbus.bus.events.vocabulary import Outcome, TaskStatus
from hookbus.bus.settings import Check

# (symbol, word, css class): the symbol and colour never say it alone.
STATUS: dict[str, tuple[str, str, str]] = {
    TaskStatus.COMPLETED.value: ("✅", "Completed", "good"),
    TaskStatus.FAILED.value: ("❌", "Failed", "bad"),
    TaskStatus.SKIPPED.value: ("⏭️", "Skipped", "muted"),
    TaskStatus.PENDING.value: ("⏸️", "Pending", "muted"),
    TaskStatus.RUNNING.value: ("▶️", "Running", "info"),
    Outcome.SUCCESS.value: ("✅", "Success", "good"),
    Outcome.WARNING.value: ("⚠️", "Warning", "warn"),
    Outcome.CANCELLED.value: ("⏹️", "Cancelled", "muted"),
    "finished": ("✅", "Finished", "good"),
    # checks
    "up": ("✅", "Up", "good"),
    "started": ("▶️", "Started", "info"),
    "new": ("🆕", "New", "muted"),
    "late": ("⚠️", "Late", "warn"),
    "down": ("❌", "Down", "bad"),
    "paused": ("⏸️", "Paused", "muted"),
    # the 30-day strip
    "missed": ("⭕", "Missed", "bad"),
    "none": ("·", "No run", "none"),
}
DAYS = 30
_WORST = {Outcome.FAILED.value: 4, Outcome.CANCELLED.value: 3, Outcome.WARNING.value: 2, Outcome.SUCCESS.value: 1}


def status(value: Any) -> tuple[str, str, str]:
    """A status as (symbol, word, css class); an unknown one is said as it is."""
    text = value if isinstance(value, str) and value else "unknown"
    return STATUS.get(text, ("•", text.replace("_", " ").capitalize(), "muted"))


def utc(value: Any) -> datetime | None:
    """An RFC 3339 string or epoch seconds as an aware UTC datetime (None when neither)."""
    moment = parse_time(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else None
    return moment.astimezone(UTC) if moment is not None else None


def duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "—"
    return f"{seconds:.2f} s" if seconds < 10 else format_duration_short(seconds)


def day_outcomes(jobs: Iterable[Mapping[str, Any]]) -> dict[str, dict[date, str]]:
    """Per job name, per UTC day, the worst outcome of the runs that finished that day."""
    out: dict[str, dict[date, str]] = {}
    for job in jobs:
        name, outcome = job.get("job"), job.get("outcome")
        moment = utc(job.get("finished_at") or job.get("started_at"))
        if not isinstance(name, str) or not isinstance(outcome, str) or moment is None:
            continue
        days = out.setdefault(name, {})
        day = moment.date()
        if _WORST.get(outcome, 0) >= _WORST.get(days.get(day, ""), 0):
            days[day] = outcome
    return out


def expected_on(checks: Iterable[Check], day: date) -> bool:
    """Whether one of the job's checks expected a run on this UTC day."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    for check in checks:
        if check.period is not None:
            if check.period <= 86400:
                return True
            continue
        due = schedule.next_due(check, start - timedelta(microseconds=1))
        if due is not None and due < start + timedelta(days=1):
            return True
    return False


def strip(days: Mapping[date, str], checks: list[Check], today: date, first: date | None) -> list[dict[str, Any]]:
    """The last DAYS days, oldest first: the day's outcome, "missed" when a check
    expected a run that day (after the job's first known run, today excepted), else "none"."""
    cells = []
    for back in range(DAYS - 1, -1, -1):
        day = today - timedelta(days=back)
        state = days.get(day)
        if state is None:
            missed = checks and first is not None and first <= day < today and expected_on(checks, day)
            state = "missed" if missed else "none"
        symbol, word, css = status(state)
        cells.append({"day": day.isoformat(), "state": state, "symbol": symbol, "word": word, "css": css})
    return cells


def job_rows(jobs: list[Mapping[str, Any]], checks: Iterable[Check], check_states: Mapping[str, Mapping[str, Any]],
             today: date) -> list[dict[str, Any]]:
    """One row per job name, newest run first in `jobs` order reversed: last run, next due, the strip."""
    by_job: dict[str, list[Check]] = {}
    for check in checks:
        by_job.setdefault(check.job, []).append(check)
    outcomes = day_outcomes(jobs)
    last: dict[str, Mapping[str, Any]] = {}
    first: dict[str, date] = {}
    for job in jobs:  # oldest first
        name = job.get("job")
        if isinstance(name, str):
            last[name] = job
            moment = utc(job.get("started_at") or job.get("finished_at"))
            if moment is not None and name not in first:
                first[name] = moment.date()
    names = sorted(set(last) | set(by_job))
    rows = []
    for name in names:
        dues = [check_states[c.name].get("next_due") for c in by_job.get(name, []) if c.name in check_states]
        rows.append({"name": name, "last": last.get(name), "next_due": min((d for d in dues if d), default=None),
                     "strip": strip(outcomes.get(name, {}), by_job.get(name, []), today, first.get(name))})
    return rows


def tail_lines(text: Any, lines: int = 3) -> str:
    """The last few lines of an output, for the summary of its folded <details>."""
    if not isinstance(text, str) or not text:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
