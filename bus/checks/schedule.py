"""When a check's job is due, and its schedule in words.

A cron `schedule` is evaluated by cronsim (what healthchecks uses: Debian
cron's semantics) in the check's `tz`. Across daylight-saving changes that
means, for a job at a fixed time (minute and hour fields not starting with
`*`):

- spring forward: a time that does not exist that night (02:30 in
  Europe/Berlin on 2027-03-28) is due at the first minute after the gap
  (03:00 CEST), once;
- fall back: a time that exists twice (02:30 on 2026-10-25) is due once, at
  its first occurrence (02:30 CEST, 00:30 UTC).

Schedules that run more often than hourly (`*/15 * * * *`, `15 * * * *`) are
evaluated in real time: every wall-clock match, both 02:15s on a fall-back
night, none in a gap. A `period` is due that long after the run it counts from.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo

from cronsim import CronSim, CronSimError

from hookbus.bus.events.times import format_duration_short
from hookbus.bus.settings import Check

__all__ = ["describe", "next_due", "schedule_text"]


def _zone(check: Check) -> tzinfo:
    return UTC if check.tz == "UTC" else check.zone


def next_due(check: Check, after: datetime) -> datetime | None:
    """The first time the check's job is due strictly after `after` (aware; a naive
    time is taken as UTC), as an aware UTC datetime: the next cron time of
    `schedule` in `tz`, or `after + period`. None when the check has neither, or
    its schedule matches no time in the next 50 years (cronsim's horizon)."""
    if after.tzinfo is None:
        after = after.replace(tzinfo=UTC)
    if check.period is not None:
        return (after + timedelta(seconds=check.period)).astimezone(UTC)
    if check.schedule is None:
        return None
    try:
        times = CronSim(check.schedule, after.astimezone(_zone(check)))
        # On a fall-back night cronsim works in local wall time: a time it
        # gives may be at or before `after` (the first of a doubled hour); the
        # next one is then due.
        for _ in range(3):
            due = next(times).astimezone(UTC)
            if due > after:
                return due
    except (StopIteration, CronSimError):
        return None
    return None


_ORDINAL = re.compile(r"\b(\d+)th\b")


def _ordinal(match: re.Match[str]) -> str:
    n = int(match.group(1))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _in_words(expr: str) -> str:
    """cronsim's explanation ("At 02:00 every day") begun in lower case, ordinals
    fixed ("31th" → "31st"); the cron text itself when it has none."""
    try:
        text = CronSim(expr, datetime(2000, 1, 1, tzinfo=UTC)).explain()
    except Exception:  # an explanation is a nicety: the cron text says it all the same
        return expr
    if not text:
        return expr
    return _ORDINAL.sub(_ordinal, text[0].lower() + text[1:])


def describe(check: Check) -> str:
    """The schedule in words, for `hookbus checks` and messages: "at 02:00 every
    day", "at 02:30 every day (Europe/Berlin)", "every 1d"; "no schedule" when
    the check has neither a schedule nor a period."""
    if check.schedule is not None:
        return _in_words(check.schedule) + ("" if check.tz == "UTC" else f" ({check.tz})")
    if check.period is not None:
        return f"every {format_duration_short(check.period)}"
    return "no schedule"


def schedule_text(check: Check) -> str | None:
    """The schedule as configured, short, for messages: "0 2 * * *", "0 2 * * *
    Europe/Berlin" (a zone other than UTC appended), "every 1d"; None without one."""
    if check.schedule is not None:
        return check.schedule + ("" if check.tz == "UTC" else f" {check.tz}")
    if check.period is not None:
        return f"every {format_duration_short(check.period)}"
    return None
