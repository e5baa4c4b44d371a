"""Cutting text to a size. Long output matters most at its end: `cut_front` keeps
the end, behind one mark (`CUT_MARK`) saying how much of the front went, in
bytes (event data, outputs) or characters (a target that counts those, such as
Slack). A title keeps its start instead (`cut_end`).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Final

__all__ = ["CUT_MARK", "Unit", "cut_end", "cut_front", "cut_mark", "utf8_len"]

CUT_MARK: Final = "…[cut: {n} {unit} before this]\n"


class Unit(StrEnum):
    """What a limit counts, and what the mark says was cut."""

    BYTES = "bytes"  # UTF-8
    CHARACTERS = "characters"


def utf8_len(text: str) -> int:
    return len(text.encode())


_LENGTH: dict[Unit, Callable[[str], int]] = {Unit.BYTES: utf8_len, Unit.CHARACTERS: len}


def cut_mark(n: int, unit: Unit = Unit.BYTES) -> str:
    """Return the line put before a text's tail when `n` units of its front were cut."""
    return CUT_MARK.format(n=n, unit=unit.value)


def _marked(text: str, start: int, unit: Unit) -> str:
    """text from `start` (a character index) on, behind the mark, or all of it when start is 0."""
    return cut_mark(_LENGTH[unit](text[:start]), unit) + text[start:] if start else text


def _longest_prefix(text: str, limit: int, size: Callable[[str], int]) -> str:
    low, high = 0, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        if size(text[:mid]) <= limit:
            low = mid
        else:
            high = mid - 1
    return text[:low]


def cut_front(text: str, limit: int, unit: Unit = Unit.BYTES, *, size: Callable[[str], int] | None = None) -> str:
    """Given a text and a limit in `unit`s, return the text within the limit: as it
    is when it fits, else its end behind `cut_mark` (the mark counts towards the
    limit; a character is never split). `size` measures the result when the limit
    is on another form of it, e.g. its JSON encoding (default: its length in
    `unit`s). A limit too small for the mark gets the mark's start; 0 or less, "".
    """
    measure = size or _LENGTH[unit]
    if measure(text) <= limit:
        return text
    if limit <= 0:
        return ""
    low, high = 1, len(text)  # the first character kept: the fewest cut that fit (fewer never fit)
    while low < high:
        mid = (low + high) // 2
        if measure(_marked(text, mid, unit)) <= limit:
            high = mid
        else:
            low = mid + 1
    cut = _marked(text, low, unit)
    return cut if measure(cut) <= limit else _longest_prefix(cut, limit, measure)


def cut_end(text: str, limit: int) -> str:
    """Return text within `limit` characters, keeping its start, then "…" (for titles)."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)].rstrip() + "…" if limit > 0 else ""
