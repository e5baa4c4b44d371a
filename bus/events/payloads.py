"""The data of job and task events (DESIGN §1), built in one place for every
reporter: `hookbus run` and each tool's adapter. A reporter adds its own fields
(`job_type`, `tasks`, `counts`, `stats`, …) as keyword arguments."""

from __future__ import annotations

from typing import Any

from hookbus.bus.events.times import now_rfc3339, seconds_between
from hookbus.bus.events.vocabulary import Outcome, Reason

__all__ = ["job_finished_data", "job_started_data", "task_data"]


def job_started_data(job_id: str, *, job: str | None, repository: str | None, host: str | None = None,
                     **extra: Any) -> dict[str, Any]:
    """Return the data of `backup.job.started`: the job's id, name, repository and host, then `extra`."""
    return {"job_id": job_id, "job": job, "repository": repository, "host": host, **extra}


def job_finished_data(job_id: str, *, job: str | None, repository: str | None, outcome: Outcome,
                      reason: Reason | None = None, error: str | None = None, started_at: str | None = None,
                      finished_at: str | None = None, duration_s: float | None = None, **extra: Any) -> dict[str, Any]:
    """Return the data of `backup.job.finished`. `finished_at` is now unless given;
    `duration_s` the time from `started_at` to `finished_at` unless given.

    Raise ValueError when `outcome` or `reason` is not one of the vocabulary's.
    """
    finished_at = finished_at or now_rfc3339()
    if duration_s is None:
        duration_s = seconds_between(started_at, finished_at)
    return {"job_id": job_id, "job": job, "repository": repository, "outcome": Outcome(outcome),
            "reason": Reason(reason) if reason is not None else None, "error": error, "started_at": started_at,
            "finished_at": finished_at, "duration_s": duration_s, **extra}


def task_data(job_id: str, task: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Return the data of `backup.task.started` / `backup.task.finished`: the job's id, the task, then `extra`."""
    return {"job_id": job_id, "task": task, **extra}
