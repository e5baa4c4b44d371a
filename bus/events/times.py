"""Times in event data: read any ISO 8601 / RFC 3339 time a tool writes, write
RFC 3339 in UTC (`2026-11-21T03:38:00.000Z`); say a time span short ("1h30m")."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any

__all__ = ["format_duration_short", "now_rfc3339", "parse_time", "rfc3339", "seconds_between"]


def parse_time(value: Any, *, assume_tz: tzinfo | None = UTC) -> datetime | None:
    """Given an ISO 8601 time (a string: `Z` or `z` for UTC, any number of digits
    after the second, as Go writes them) or epoch seconds, return it as a datetime.

    A time without an offset is taken to be in `assume_tz` (UTC), or left naive
    when that is None. Return None for anything that is not such a time.
    """
    try:
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, UTC)
        if not isinstance(value, str):
            return None
        parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except (ValueError, OverflowError, OSError):
        return None
    if parsed.tzinfo is None and assume_tz is not None:
        return parsed.replace(tzinfo=assume_tz)
    return parsed


def rfc3339(moment: datetime, timespec: str = "milliseconds") -> str:
    """Return an aware datetime as RFC 3339 in UTC, e.g. 2026-11-21T03:38:00.000Z."""
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def now_rfc3339() -> str:
    return rfc3339(datetime.now(UTC))


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one time to another (to the millisecond), or None when either is missing or no time."""
    if not start or not end:
        return None
    a, b = parse_time(start), parse_time(end)
    return round((b - a).total_seconds(), 3) if a and b else None


def format_duration_short(seconds: float) -> str:
    """A time span as a configuration would write it: "45s", "5m", "1h", "1h30m",
    "1d", "2d6h", "2w" (weeks only when the span is whole weeks, then days,
    hours, minutes, seconds; zero parts left out; whole seconds, except below one
    second: "0.5s")."""
    if seconds < 1:
        return f"{max(seconds, 0):g}s"
    rest = round(seconds)
    if rest % (7 * 86400) == 0:
        return f"{rest // (7 * 86400)}w"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
