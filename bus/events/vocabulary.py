"""The words every layer shares (DESIGN §1): how a job ended and why, a task's
kind, phase and status. Event data carries them as plain strings; hookbus
compares and produces them through these names only. Each tool's own words are
mapped onto them in its adapter.

They are `StrEnum`s: a member is its string (`Outcome.FAILED == "failed"`) and
is encoded as one, but is no dict key for orjson: key with `.value`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = ["FAILED_OUTCOMES", "Outcome", "Phase", "Reason", "TaskKind", "TaskStatus"]


class Outcome(StrEnum):
    """How a job (`backup.job.finished`) or a validation ended."""

    SUCCESS = "success"
    WARNING = "warning"  # completed, with something to look at (a task that was not critical failed, a partial backup)
    FAILED = "failed"
    CANCELLED = "cancelled"


class Reason(StrEnum):
    """Why a job did not succeed (`reason` of `backup.job.finished`; None on success)."""

    CRITICAL_HOOK = "critical_hook"
    BACKUP_ERROR = "backup_error"
    TASK_FAILED = "task_failed"
    CANCELLED = "cancelled"


class TaskKind(StrEnum):
    HOOK = "hook"
    BACKUP = "backup"
    PRUNE = "prune"
    CHECK = "check"
    FORGET = "forget"
    NOTIFICATION = "notification"


class Phase(StrEnum):
    """When a task runs: before the backup, as part of it, or after it."""

    PRE = "pre"
    MAIN = "main"
    POST = "post"


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


# The outcomes that count as an error (a red message, a failure hook).
FAILED_OUTCOMES: Final = (Outcome.FAILED, Outcome.CANCELLED)
