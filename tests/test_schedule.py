"""Check schedules (bus/checks/schedule.py): the next due time of a cron schedule
in a time zone, across daylight-saving changes and month ends; periods; the
schedule in words; the short duration form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hookbus.bus.checks.schedule import describe, next_due, schedule_text
from hookbus.bus.events.times import format_duration_short
from hookbus.bus.settings import Check, parse_duration

BERLIN = ZoneInfo("Europe/Berlin")


def check(**keys: Any) -> Check:
    return Check.model_validate({"job": "nightly", **keys})


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def berlin(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=BERLIN, fold=fold)


def run_times(c: Check, after: datetime, count: int) -> list[datetime]:
    times: list[datetime] = []
    for _ in range(count):
        due = next_due(c, after)
        assert due is not None and due > after and due.tzinfo is UTC
        times.append(due)
        after = due
    return times


def test_cron_is_evaluated_in_utc_by_default() -> None:
    c = check(schedule="0 2 * * *")
    assert c.tz == "UTC"
    assert next_due(c, utc(2026, 12, 3, 12, 0)) == utc(2026, 12, 4, 2, 0)


def test_the_next_time_is_strictly_after() -> None:
    c = check(schedule="0 2 * * *")
    assert next_due(c, utc(2026, 12, 4, 2, 0)) == utc(2026, 12, 5, 2, 0)
    assert next_due(c, utc(2026, 12, 4, 1, 59, 59, 999999)) == utc(2026, 12, 4, 2, 0)
    assert next_due(c, datetime(2026, 12, 4, 1, 0)) == utc(2026, 12, 4, 2, 0)  # naive: UTC


def test_cron_in_a_time_zone_is_returned_in_utc() -> None:
    c = check(schedule="0 2 * * *", tz="Europe/Berlin")
    assert next_due(c, utc(2026, 12, 3, 12, 0)) == utc(2026, 12, 4, 1, 0)  # CET, +01:00
    assert next_due(c, utc(2026, 7, 3, 12, 0)) == utc(2026, 7, 4, 0, 0)  # CEST, +02:00
    # `after` in any zone is the same moment
    assert next_due(c, utc(2026, 7, 3, 12, 0).astimezone(ZoneInfo("America/New_York"))) == utc(2026, 7, 4, 0, 0)


def test_spring_forward_a_time_that_does_not_exist_is_due_right_after_the_gap() -> None:
    """2027-03-28 in Berlin: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist.
    cronsim does what Debian cron does: the job runs at the first minute after
    the gap, 03:00 CEST (01:00 UTC), once; the next night is 02:30 again."""
    c = check(schedule="30 2 * * *", tz="Europe/Berlin")
    times = run_times(c, berlin(2027, 3, 27, 12, 0), 3)
    assert times == [berlin(2027, 3, 28, 3, 0).astimezone(UTC), berlin(2027, 3, 29, 2, 30).astimezone(UTC),
                     berlin(2027, 3, 30, 2, 30).astimezone(UTC)]
    assert times[0] == utc(2027, 3, 28, 1, 0)


def test_fall_back_a_time_that_exists_twice_is_due_once() -> None:
    """2026-10-25 in Berlin: 03:00 CEST goes back to 02:00 CET, so 02:30 happens at
    00:30 UTC and again at 01:30 UTC. The job is due once, at the first."""
    c = check(schedule="30 2 * * *", tz="Europe/Berlin")
    times = run_times(c, berlin(2026, 10, 24, 12, 0), 3)
    assert times == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)]
    # asked from between the two 02:30s (02:00 CET, the second time round) and from within
    # the doubled hour: the next is the next night's, not the second 02:30
    assert next_due(c, berlin(2026, 10, 25, 2, 0, fold=1)) == utc(2026, 10, 26, 1, 30)
    assert next_due(c, utc(2026, 10, 25, 0, 45)) == utc(2026, 10, 26, 1, 30)
    assert next_due(c, utc(2026, 10, 25, 1, 30)) == utc(2026, 10, 26, 1, 30)


def test_fall_back_a_later_time_in_the_night_is_due_in_real_time() -> None:
    c = check(schedule="0 3 * * *", tz="Europe/Berlin")
    assert next_due(c, berlin(2026, 10, 25, 2, 15, fold=1)) == utc(2026, 10, 25, 2, 0)


def test_an_hourly_schedule_runs_by_the_clock_across_fall_back() -> None:
    """More often than hourly cron runs at every wall-clock match: the doubled hour twice."""
    c = check(schedule="30 * * * *", tz="Europe/Berlin")
    times = run_times(c, utc(2026, 10, 24, 23, 45), 4)
    assert times == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 2, 30), utc(2026, 10, 25, 3, 30)]


def test_day_31_skips_the_short_months() -> None:
    c = check(schedule="0 0 31 * *")
    assert run_times(c, utc(2027, 1, 31, 12, 0), 4) == [utc(2027, 3, 31), utc(2027, 5, 31), utc(2027, 7, 31), utc(2027, 8, 31)]


def test_the_last_day_of_the_month() -> None:
    """`L` (cronsim's, as on healthchecks): the last day, whatever the month's length."""
    c = check(schedule="0 3 L * *")
    assert run_times(c, utc(2027, 1, 15), 3) == [utc(2027, 1, 31, 3), utc(2027, 2, 28, 3), utc(2027, 3, 31, 3)]
    assert next_due(c, utc(2028, 2, 1)) == utc(2028, 2, 29, 3)


def test_february_29_waits_for_a_leap_year() -> None:
    c = check(schedule="0 2 29 2 *")
    assert next_due(c, utc(2026, 3, 1)) == utc(2028, 2, 29, 2)
    assert next_due(c, utc(2028, 2, 29, 2)) == utc(2032, 2, 29, 2)


def test_weekdays() -> None:
    c = check(schedule="0 22 * * 1-5")
    friday = utc(2026, 12, 4, 23, 0)
    assert next_due(c, friday) == utc(2026, 12, 7, 22, 0)  # Monday


def test_a_period_is_due_that_long_after() -> None:
    c = check(period="1d")
    after = berlin(2026, 10, 24, 2, 0)
    # real time, 24 h (the 25 h wall-clock day of fall-back is not a day of this period)
    assert next_due(c, after) == after.astimezone(UTC) + timedelta(days=1) == utc(2026, 10, 25, 0, 0)
    assert next_due(check(period=90), utc(2026, 1, 1)) == utc(2026, 1, 1, 0, 1, 30)


def test_a_check_without_schedule_or_period_is_never_due() -> None:
    assert next_due(check(key="nightly"), utc(2026, 1, 1)) is None
    assert describe(check()) == "no schedule"
    assert schedule_text(check()) is None


@pytest.mark.parametrize("keys,words,short", [
    ({"schedule": "0 2 * * *"}, "at 02:00 every day", "0 2 * * *"),
    ({"schedule": "30 2 * * *", "tz": "Europe/Berlin"}, "at 02:30 every day (Europe/Berlin)", "30 2 * * * Europe/Berlin"),
    ({"schedule": "0  2 *  * 1-5"}, "at 02:00 on Monday through Friday", "0 2 * * 1-5"),
    ({"schedule": "0 0 31 * *"}, "at 00:00 on the 31st day of every month", "0 0 31 * *"),
    ({"schedule": "0 0 22 * *"}, "at 00:00 on the 22nd day of every month", "0 0 22 * *"),
    ({"schedule": "*/15 * * * *"}, "every 15th minute of every hour", "*/15 * * * *"),
    ({"period": "1d"}, "every 1d", "every 1d"),
    ({"period": "1h30m"}, "every 1h30m", "every 1h30m"),
    ({"period": "2w"}, "every 2w", "every 2w"),
])
def test_schedule_in_words_and_short(keys: dict[str, Any], words: str, short: str) -> None:
    assert describe(check(**keys)) == words
    assert schedule_text(check(**keys)) == short


@pytest.mark.parametrize("seconds,text", [
    (45, "45s"), (60, "1m"), (3600, "1h"), (5400, "1h30m"), (86400, "1d"), (86400 + 6 * 3600, "1d6h"),
    (7 * 86400, "1w"), (8 * 86400, "8d"), (3661, "1h1m1s"), (0.5, "0.5s"), (0, "0s"), (89.6, "1m30s"),
])
def test_format_duration_short(seconds: float, text: str) -> None:
    assert format_duration_short(seconds) == text


@pytest.mark.parametrize("text,seconds", [
    ("30s", 30), ("5m", 300), ("4h", 14400), ("1d", 86400), ("2w", 14 * 86400), ("1h30m", 5400), ("1d 12h", 129600),
    ("1.5h", 5400), ("90", 90), ("0.5", 0.5), ("2H", 7200),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration_short(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "h", "1x", "-5m", "30m1h", "1h1h", "1h 30", "inf", "nan", "1e999m", "1e999", "5 minutes"])
def test_parse_duration_refuses(text: str) -> None:
    assert parse_duration(text) is None
