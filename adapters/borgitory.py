"""Borgitory: its job status JSON, and its hooks' environment.

`POST /ingest/borgitory` takes a job as Borgitory's API shows it
(`GET /api/jobs/{id}/status`: `id`, `status`, `started_at`, `completed_at`,
`return_code`, `error`, `job_type`, `current_task_index`, `tasks`). `tasks` is
either the number of tasks (what that endpoint answers) or the list of tasks
(`task_type`, `task_name`, `status`, `return_code`, `error`, `output_lines`,
`parameters`, as in Borgitory's job details). It gives `backup.job.started`,
a `backup.task.started`/`finished` for every task that has got that far, and,
once the job is over, `backup.job.finished` with outcome, reason, counts and
every task. Event ids derive from Borgitory's job id, so posting the same job
again as it progresses adds only what is new.

`hookbus emit --from borgitory` runs inside a Borgitory pre- or post-job hook
and reads `BORGITORY_REPOSITORY_ID`, `BORGITORY_TASK_INDEX` and
`BORGITORY_JOB_TYPE`: in a pre-hook (task index 0) it reports the job started,
in a post-hook that does not run on job failure, that it finished successfully
(`--state` says otherwise).

`[[sources]] kind = "borgitory"` (`follow`) watches a running Borgitory instead:
its job stream and, beside it, its database; every job, failures included, as
the same canonical events (see "following a running Borgitory" below). That is
what serves the real Borgitory 2.4.3, whose hooks never run for a failed job.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from hookbus.adapters.common import (
    OUTPUT_TAIL_BYTES,
    FileJobs,
    count,
    error_line,
    job_finished,
    job_started,
    json_object,
    new_job,
    task_event,
    timestamp,
)
from hookbus.adapters.common import field as get
from hookbus.adapters.registry import Ingest
from hookbus.bus.events.event import Event, EventError
from hookbus.bus.events.host import host_name
from hookbus.bus.events.text import cut_front
from hookbus.bus.events.times import parse_time, seconds_between
from hookbus.bus.events.vocabulary import Outcome, Phase, Reason, TaskKind, TaskStatus
from hookbus.bus.secrets import scrub
from hookbus.bus.settings import SourceSettings

log = logging.getLogger("hookbus.sources.borgitory")

# Borgitory's own words for a job's and a task's status.
JOB_STATUSES = ("pending", "queued", "running", "completed", "failed", "cancelled", "stopped")
FINAL = ("completed", "failed", "cancelled", "stopped")
TASK_STATUSES = ("pending", "queued", "running", "completed", "failed", "skipped", "stopped")
# Borgitory's task statuses in hookbus's words (the others are the same words).
TASK_STATUS = {"queued": TaskStatus.PENDING, "stopped": TaskStatus.FAILED}


# -- the job status JSON ------------------------------------------------------------

def parse_task(index: int, raw: Any, backup_index: int | None) -> dict[str, Any]:
    where = f"tasks[{index}]"
    if not isinstance(raw, dict):
        raise EventError(where, "must be an object")
    task_type = get(raw, "task_type", str, where=where, required=True)
    status = get(raw, "status", str, where=where, required=True)
    if status not in TASK_STATUSES:
        raise EventError(f"{where}.status", f"must be one of {', '.join(TASK_STATUSES)}, not {status[:40]!r}")
    params = get(raw, "parameters", dict, where=where, default={})
    started = timestamp(raw, "started_at", where=where)
    completed = timestamp(raw, "completed_at", where=where)
    error = get(raw, "error", str, where=where)
    kind = task_type  # Borgitory's words are hookbus's (backup, prune, check, hook…); compact, cloud_sync… kept as they are
    hook_type = params.get("hook_type") if isinstance(params.get("hook_type"), str) else None
    if kind == TaskKind.HOOK:
        before = backup_index is None or index < backup_index
        phase = hook_type if hook_type in (Phase.PRE, Phase.POST) else (Phase.PRE if before else Phase.POST)
    else:
        phase = Phase.MAIN
    critical_failure = bool(params.get("critical_failure")) or (error or "").startswith("Critical hook")
    task: dict[str, Any] = {
        "index": index, "name": get(raw, "task_name", str, where=where) or task_type, "kind": kind, "phase": phase,
        "status": TASK_STATUS.get(status, status), "critical": kind == TaskKind.BACKUP or critical_failure,
        "message": error, "exit_code": get(raw, "return_code", int, where=where),
        "started_at": started, "finished_at": completed, "duration_s": seconds_between(started, completed),
    }
    if status == "stopped":
        task["message"] = error or "stopped"
    output = output_text(raw, where)
    if output:
        task["output_tail"] = cut_front(output, OUTPUT_TAIL_BYTES)
    if critical_failure and isinstance(params.get("failed_critical_hook_name"), str):
        task["failed_hook"] = params["failed_critical_hook_name"]
    return task


def output_text(raw: dict[str, Any], where: str) -> str:
    lines = get(raw, "output_lines", list, where=where, default=[])
    out = []
    for i, line in enumerate(lines):
        if isinstance(line, dict):
            line = line.get("text")
        if not isinstance(line, str):
            raise EventError(f"{where}.output_lines[{i}]", "must be a string or an object with text")
        out.append(line)
    text = get(raw, "output", str, where=where)
    return "\n".join(out) if out else (text or "")


def parse_job(obj: dict[str, Any]) -> dict[str, Any]:
    """Given Borgitory's job status JSON, return it checked; raise EventError naming the field."""
    job_id = get(obj, "id", (str, int), required=True)
    if str(job_id).strip() == "":
        raise EventError("id", "must not be empty")
    status = get(obj, "status", str, required=True)
    if status not in JOB_STATUSES:
        raise EventError("status", f"must be one of {', '.join(JOB_STATUSES)}, not {status[:40]!r}")
    raw_tasks = obj.get("tasks")
    tasks: list[dict[str, Any]] | None = None
    total: int | None = None
    if isinstance(raw_tasks, list):
        types = [t.get("task_type") if isinstance(t, dict) else None for t in raw_tasks]
        backup_index = types.index(TaskKind.BACKUP) if TaskKind.BACKUP in types else None
        tasks = [parse_task(i, t, backup_index) for i, t in enumerate(raw_tasks)]
        total = len(tasks)
    elif raw_tasks is not None:
        total = count(obj, "tasks")
    repository_id = get(obj, "repository_id", (str, int))
    return {
        "id": str(job_id), "status": status, "tasks": tasks, "total": total,
        "started_at": timestamp(obj, "started_at"), "completed_at": timestamp(obj, "completed_at"),
        "return_code": get(obj, "return_code", int), "error": get(obj, "error", str),
        "job_type": get(obj, "job_type", str), "current_task_index": count(obj, "current_task_index"),
        "repository": get(obj, "repository", str) or (str(repository_id) if repository_id is not None else None),
        "repository_id": repository_id, "job": get(obj, "job", str) or get(obj, "schedule", str),
    }


def outcome_of(job: dict[str, Any]) -> tuple[Outcome, Reason | None, str | None, list[str]]:
    """(outcome, reason, failed hook, failed task kinds) as DESIGN §1 and §6 describe them."""
    tasks = job["tasks"] or []
    failed = [t for t in tasks if t["status"] == TaskStatus.FAILED]
    failed_kinds = sorted({t["kind"] for t in failed})
    if job["status"] in ("cancelled", "stopped"):
        return Outcome.CANCELLED, Reason.CANCELLED, None, failed_kinds
    if job["status"] == "completed":
        return (Outcome.WARNING if failed else Outcome.SUCCESS), None, None, failed_kinds
    critical_hook = next((t for t in failed if t["kind"] == TaskKind.HOOK and t["critical"]), None)
    if critical_hook is not None:
        return Outcome.FAILED, Reason.CRITICAL_HOOK, critical_hook.get("failed_hook") or critical_hook["name"], failed_kinds
    if any(t["kind"] == TaskKind.BACKUP for t in failed) or not failed:
        return Outcome.FAILED, Reason.BACKUP_ERROR, None, failed_kinds
    return Outcome.FAILED, Reason.TASK_FAILED, None, failed_kinds


_ENDED = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.SKIPPED)


def job_events(job: dict[str, Any], source: str) -> list[Event]:
    job_id, repo, tasks = job["id"], job["repository"], job["tasks"]
    common = {"job": job["job"], "repository": repo}
    planned = [{"index": t["index"], "name": t["name"], "kind": t["kind"], "phase": t["phase"]} for t in tasks] if tasks else None
    out = [job_started(source, job_id, started_at=job["started_at"], job_type=job["job_type"],
                       repository_id=job["repository_id"], tasks=planned, tasks_total=job["total"], **common)]
    for task in tasks or []:
        if task["status"] != TaskStatus.PENDING:
            out.append(task_event(source, job_id, "started", {**task, "status": TaskStatus.RUNNING}, subject=repo,
                                  event_key=str(task["index"])))
        if task["status"] in _ENDED:
            out.append(task_event(source, job_id, "finished", task, subject=repo, event_key=str(task["index"])))
    if job["status"] in FINAL:
        outcome, reason, failed_hook, failed_kinds = outcome_of(job)
        counts = None
        if tasks is not None:
            counts = {s.value: sum(1 for t in tasks if t["status"] == s) for s in _ENDED}
            counts["total"] = len(tasks)
        out.append(job_finished(
            source, job_id, outcome=outcome, reason=reason, error=job["error"], started_at=job["started_at"],
            finished_at=job["completed_at"], failed_hook=failed_hook, failed_tasks=failed_kinds, counts=counts,
            tasks=tasks, tasks_total=job["total"], exit_status=job["return_code"], job_type=job["job_type"],
            repository_id=job["repository_id"], **common))
    return out


async def ingest(request: web.Request) -> list[Event]:
    obj = json_object(await request.read())
    job = parse_job(obj)
    job["repository"] = request.query.get("repository") or job["repository"]
    job["job"] = request.query.get("job") or job["job"]
    return job_events(job, f"borgitory://{request.query.get('instance') or 'borgitory'}")


# -- inside a Borgitory hook ------------------------------------------------------------

def hook_context(env: dict[str, str]) -> tuple[str, int, str]:
    """(repository id, task index, job type) from a Borgitory hook's environment."""
    repo_id = env.get("BORGITORY_REPOSITORY_ID", "").strip()
    if not repo_id:
        raise ValueError("BORGITORY_REPOSITORY_ID is not set: run `hookbus emit --from borgitory` inside a Borgitory job hook")
    raw_index = env.get("BORGITORY_TASK_INDEX", "").strip()
    if not raw_index.isdigit():
        raise ValueError(f"BORGITORY_TASK_INDEX must be the hook's task index, a number, not {raw_index[:20]!r}")
    return repo_id, int(raw_index), env.get("BORGITORY_JOB_TYPE", "").strip() or "unknown"


def from_cli(args: argparse.Namespace, env: dict[str, str] | None = None, jobs: FileJobs | None = None) -> list[Event]:
    repo_id, task_index, job_type = hook_context(dict(os.environ) if env is None else env)
    # The first task of a job is its pre-hook; a hook further on is a post-hook.
    state = args.state or ("start" if task_index == 0 else "finish")
    if state not in ("start", "finish", "fail"):
        raise ValueError(f"--state for borgitory: start, finish or fail, not {state!r}")
    jobs = jobs or FileJobs()
    key = f"borgitory:{repo_id}:{job_type}"
    host = host_name()
    source = f"borgitory://{host}/repository/{repo_id}"
    repository = args.repository or args.subject or repo_id
    common: dict[str, Any] = {"job": args.job or "borgitory", "repository": repository, "host": host,
                              "job_type": job_type, "repository_id": repo_id, "task_index": task_index}
    if state == "start":
        job = new_job()
        jobs.open_sync(key, job)
        return [job_started(source, job.job_id, started_at=job.started_at, **common)]
    open_job = jobs.get_sync(key)
    job = open_job or new_job()
    if open_job is not None:
        jobs.close_sync(key, open_job.job_id)
    ok = state == "finish"
    return [job_finished(source, job.job_id, outcome=Outcome.SUCCESS if ok else Outcome.FAILED,
                         reason=None if ok else Reason.BACKUP_ERROR,
                         error=None if ok else (args.error or "the Borgitory job failed"),
                         started_at=open_job.started_at if open_job else None, **common)]


# -- following a running Borgitory ([[sources]] kind "borgitory", DESIGN §14) ----------------
#
# Borgitory 2.4.3 tells no one of a failed job (its failure hooks and notifications are
# skipped), so hookbus watches it. Its job stream (`GET /api/jobs/stream`, no login) says
# when something happened, live; its SQLite database holds every job with every task, its
# error and output (the failed hook's name is only there, in the task's error and output),
# and every job that ran while hookbus was away. With `database` set (hookbus beside
# Borgitory), each stream message is a wake-up to read that job from the database, and
# every job in it is read at each (re)connection; without it, jobs are built from the
# stream's messages alone. Either way a job becomes `job_events`, whose ids derive from
# Borgitory's job id: seen twice, it is stored once.

STREAM_PATH = "/api/jobs/stream"
READ_TIMEOUT_S = 75.0  # Borgitory sends a keepalive every 30 s: silence past this is a dead connection
MAX_MESSAGE_BYTES = 1 << 20  # a stream message larger than this is garbage: skipped
BATCH = 512  # events per commit when publishing many jobs at once
MAX_OPEN_JOBS = 1000  # jobs under way kept from the stream alone (Borgitory runs a handful at once)
MAX_TASKS = 1000  # tasks of one job (a Borgitory job has about seven)
_JOB_MESSAGES = ("job_started", "job_status_changed", "task_started", "task_completed", "task_failed",
                 "job_completed", "job_failed", "job_cancelled")
_CRITICAL_HOOK = "Critical hook execution failed: "
_HOOK_ERROR_LINE = re.compile(r"^\[(.+?)\] ERROR: ", re.M)
_BACKUP_FAILED = re.compile(r"^(Backup failed with return code -?\d+):")
# What borg says went wrong, among its statistics (an OSError's "[Errno 2] No such file…" reads like none).
_BORG_PROBLEM = re.compile(r"\[Errno \d+\]|error|denied|does not exist|not found|failed|refused", re.I)


class StreamMessages:
    """Borgitory's job stream, message by message. Borgitory 2.4.3 writes its
    separators as the two characters backslash and n (`event: x\\ndata: {…}\\n\\n`),
    so no server-sent-events client sees a message end; each message's data is one
    JSON object, which is what is read here, whatever separates them."""

    def __init__(self) -> None:
        self.buffer = ""
        self.decoder = json.JSONDecoder()
        self.waiting = False  # for the rest of a message: only a `}` can end it

    def feed(self, chunk: str) -> list[dict[str, Any]]:
        """Given the next piece of the stream, return the messages it completes."""
        self.buffer += chunk
        if self.waiting and "}" not in chunk and len(self.buffer) <= MAX_MESSAGE_BYTES:
            return []  # a long message in small pieces is not decoded again at every piece
        self.waiting = False
        out: list[dict[str, Any]] = []
        while True:
            start = self.buffer.find("data:")
            if start < 0:
                self.buffer = self.buffer[-8:]  # what could begin the next `data:`
                return out
            begin = start + 5
            while begin < len(self.buffer) and self.buffer[begin] == " ":
                begin += 1
            try:
                obj, end = self.decoder.raw_decode(self.buffer, begin)
            except json.JSONDecodeError:
                if len(self.buffer) - start <= MAX_MESSAGE_BYTES:
                    self.buffer = self.buffer[start:]
                    self.waiting = True
                    return out  # not all there yet
                log.warning("borgitory stream: skipped a message that is not JSON")
                self.buffer = self.buffer[begin:]
                continue
            self.buffer = self.buffer[end:]
            if isinstance(obj, dict):
                out.append(obj)


def critical_hook_name(error: str | None, output: str | None) -> str | None:
    """The hook whose failure stopped the job: Borgitory stops at it, so it is the last
    `name: error` in the task's error, named as in the output's `[name] ERROR:` lines."""
    if not error or not error.startswith(_CRITICAL_HOOK):
        return None
    tail = error[len(_CRITICAL_HOOK):]
    named: list[str] = [name for name in _HOOK_ERROR_LINE.findall(output or "") if f"{name}: " in tail]
    if named:
        return max(named, key=lambda name: tail.rfind(f"{name}: "))
    last = tail.rsplit("; ", 1)[-1]
    return last.split(": ", 1)[0] or None


def task_error(error: str | None, output: str | None) -> str | None:
    """A task's error in one line: a failed backup's says "return code 1: " and then the
    whole borg summary; its cause is in the output."""
    if not error:
        return None
    failed = _BACKUP_FAILED.match(error)
    if failed:
        lines = [line.strip() for line in (output or "").splitlines()]
        cause = next((line for line in lines if _BORG_PROBLEM.search(line)), None) or error_line(output or "")
        return f"{failed.group(1)}: {cause[:500]}" if cause else failed.group(1)
    first = error.strip().splitlines()[0].removeprefix("Error: ") if error.strip() else ""  # the message adds its own
    return first[:1000] or None


def job_type_word(borgitory_type: str | None) -> str:
    """hookbus's job_type (scheduled/manual) for Borgitory's ("Scheduled Backup", "Manual Backup", "Prune"…)."""
    return "scheduled" if borgitory_type and "sched" in borgitory_type.lower() else "manual"


# -- from the database ---------------------------------------------------------------

_JOB_COLUMNS = ("j.id, j.status, j.type, j.started_at, j.finished_at, j.error, j.repository_id, r.name "
                "FROM jobs j LEFT JOIN repositories r ON r.id = j.repository_id")
_TASK_COLUMNS = ("task_type, task_name, status, started_at, completed_at, output, error, return_code "
                 "FROM job_tasks WHERE job_id = ? ORDER BY task_order")


def _iso(value: Any) -> str | None:
    """The database's times ("2026-12-05 12:01:15.534350", UTC) as ISO 8601."""
    if isinstance(value, str) and value and "+" not in value and not value.endswith("Z"):
        return value.replace(" ", "T", 1) + "Z"
    return value if isinstance(value, str) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def db_job(db: sqlite3.Connection, row: tuple[Any, ...]) -> dict[str, Any]:
    """A job as parse_job takes it, from its row in `jobs` and its rows in `job_tasks`."""
    job_id, status, type_, started, finished, error, repository_id, repository = row
    tasks = []
    for task_type, name, t_status, t_started, t_completed, output, t_error, code in db.execute(
            f"SELECT {_TASK_COLUMNS}", (job_id,)):
        output, t_error = _text(output), _text(t_error)
        params: dict[str, Any] = {}
        failed_hook = critical_hook_name(t_error, output)
        if failed_hook is not None:
            params = {"critical_failure": True, "failed_critical_hook_name": failed_hook}
        tasks.append({"task_type": task_type, "task_name": name, "status": t_status,
                      "started_at": _iso(t_started), "completed_at": _iso(t_completed),
                      "error": task_error(t_error, output),
                      "return_code": code if isinstance(code, int) else None,
                      "output": output or "", "parameters": params})
    first_error = next((t["error"] for t in tasks if t["status"] == "failed" and t["error"]), None)
    return {"id": job_id, "status": status, "started_at": _iso(started), "completed_at": _iso(finished),
            "error": task_error(_text(error), None) or first_error, "job_type": job_type_word(_text(type_)),
            "job": _text(type_), "repository": _text(repository), "repository_id": repository_id, "tasks": tasks}


def mark_started(raw: dict[str, Any], started: dict[int, str | None]) -> None:
    """Tasks still pending in the database that the stream said started are running."""
    for index, task in enumerate(raw["tasks"]):
        if task["status"] == "pending" and index in started:
            task["status"] = "running"
            task["started_at"] = task["started_at"] or started[index]


def read_jobs(path: Path, job_id: str | None = None, skip: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Jobs from Borgitory's database (one, or all but those in `skip`, oldest first), opened read-only."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        if job_id is None:
            rows = db.execute(f"SELECT {_JOB_COLUMNS} ORDER BY j.started_at, j.id").fetchall()
        else:
            rows = db.execute(f"SELECT {_JOB_COLUMNS} WHERE j.id = ?", (job_id,)).fetchall()
        return [db_job(db, row) for row in rows if row[0] not in skip]


# -- from the stream alone -----------------------------------------------------------

class StreamJobs:
    """Jobs built from the stream's messages, where the database is out of reach: the
    stream names each task as it starts and says how it ended, not why (no error, no
    hook names); tasks never started are counted as skipped once the job is over."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}

    def update(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Take one message; return the job it is about as parse_job takes it (None: none)."""
        job_id, kind, data = message.get("job_id"), message.get("type"), message.get("data")
        if not isinstance(job_id, str) or not isinstance(data, dict):
            return None
        if job_id not in self.jobs and len(self.jobs) >= MAX_OPEN_JOBS:
            del self.jobs[next(iter(self.jobs))]  # bounded, whatever the stream says: the oldest goes
        job = self.jobs.setdefault(job_id, {"id": job_id, "status": "pending", "tasks": {}, "total": None,
                                            "started_at": message.get("timestamp")})
        if kind == "job_started":
            job["type"] = data.get("job_type")
            job["total"] = data.get("task_count")
        elif kind == "job_status_changed" and isinstance(data.get("status"), str):
            job["status"] = data["status"]
            job["started_at"] = data.get("started_at") or job["started_at"]
        elif kind in ("task_started", "task_completed", "task_failed") and isinstance(data.get("task_index"), int):
            if data["task_index"] not in job["tasks"] and len(job["tasks"]) >= MAX_TASKS:
                return None
            task = job["tasks"].setdefault(data["task_index"], {"status": "running"})
            if kind == "task_started":
                task.update(task_type=data.get("task_type"), task_name=data.get("task_name"),
                            started_at=message.get("timestamp"))
            else:
                task.update(status=data.get("status") or ("completed" if kind == "task_completed" else "failed"),
                            return_code=data.get("return_code"), error=data.get("error"),
                            completed_at=message.get("timestamp"))
        elif kind in ("job_completed", "job_failed", "job_cancelled"):
            job["status"] = data.get("status") or kind.removeprefix("job_")
            job["completed_at"] = data.get("completed_at") or message.get("timestamp")
        return self.snapshot(job)

    def snapshot(self, job: dict[str, Any]) -> dict[str, Any]:
        final = job["status"] in FINAL
        total = job["total"] if isinstance(job["total"], int) and 0 <= job["total"] <= MAX_TASKS else None
        seen: dict[int, dict[str, Any]] = job["tasks"]
        tasks: list[dict[str, Any]] | int | None = total
        if seen and total is not None and all(0 <= i < total for i in seen) and (final or len(seen) == max(seen) + 1):
            unseen = "skipped" if final else "pending"  # a job over skipped them; one running has not reached them
            tasks = [{"task_type": "unknown", "task_name": f"task {i}", "status": unseen} for i in range(total)]
            for i, task in seen.items():
                tasks[i] = {"task_type": "unknown", "task_name": f"task {i}", **task}
            if job["status"] == "failed" and not any(t["task_type"] == "backup" and t["status"] == "failed" for t in tasks):
                # Borgitory fails a job for a failed backup or a critical hook, nothing else.
                for task in tasks:
                    if task["task_type"] == "hook" and task["status"] == "failed":
                        task["parameters"] = {"critical_failure": True}
        if final:
            del self.jobs[job["id"]]
        return {"id": job["id"], "status": job["status"], "started_at": job["started_at"],
                "completed_at": job.get("completed_at"), "job": job.get("type"), "job_type": job_type_word(job.get("type")),
                "tasks": tasks}

    @staticmethod
    def listed(entry: Any) -> dict[str, Any] | None:
        """A job from the stream's first message (the jobs Borgitory holds in memory): a
        job that ended while hookbus was away, with its outcome and no tasks."""
        if not isinstance(entry, dict) or entry.get("status") not in FINAL:
            return None
        return {"id": entry.get("id"), "status": entry["status"], "started_at": entry.get("started_at"),
                "completed_at": entry.get("completed_at"), "tasks": entry.get("total_tasks")}


# -- the follower ----------------------------------------------------------------------

class NotAStream(Exception):
    """The URL answers, but not with Borgitory's job stream."""


class Follower:
    """One `[[sources]]` entry of kind borgitory, publishing through `ingest`."""

    def __init__(self, settings: SourceSettings, ingest: Ingest) -> None:
        self.settings, self.ingest = settings, ingest
        self.source = f"borgitory://{settings.name}"
        self.shown = scrub(str(URL(settings.url).with_user(None)))  # for logs: no credentials in them
        self.stream_jobs = StreamJobs()
        self.connected = False  # in this attempt: the backoff starts over after a connection
        self.ended: set[str] = set()  # jobs published over, in this process: not read again at a reconnection
        # Tasks the stream said started, by job: Borgitory writes a task to its database only
        # once it has ended, so the database alone would tell of a start hours late.
        self.started: dict[str, dict[int, str | None]] = {}

    async def publish(self, raws: list[dict[str, Any]]) -> None:
        """Publish jobs as Borgitory shows them, in commits of about BATCH events (a catch-up
        of thousands of jobs is a few commits, not one per job); what is malformed is logged
        and left out (never fatal)."""
        batch: list[Event] = []
        ended: list[str] = []
        for raw in raws:
            try:
                job = parse_job(raw)
                batch += job_events(job, self.source)
            except EventError as exc:
                log.warning("source %s: job %.80r left out: %s", self.settings.name, scrub(str(raw.get("id"))), scrub(str(exc)))
                continue
            if job["status"] in FINAL:
                ended.append(job["id"])
            if len(batch) >= BATCH:
                await self.commit(batch, ended)
                batch, ended = [], []
        if batch:
            await self.commit(batch, ended)

    async def commit(self, events: list[Event], ended: list[str]) -> None:
        await self.ingest(events)
        self.ended.update(ended)  # only once committed: a failed commit is tried again at the reconnection

    async def catch_up(self) -> None:
        """Every job in Borgitory's database (those that ran while hookbus was away among them)."""
        assert self.settings.database is not None
        jobs = await asyncio.to_thread(read_jobs, self.settings.database, skip=frozenset(self.ended))
        await self.publish(jobs)
        log.info("source %s: %d jobs read from %s", self.settings.name, len(jobs), self.settings.database)

    async def on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "jobs_update" and self.settings.database is None and isinstance(message.get("jobs"), list):
            listed = [StreamJobs.listed(entry) for entry in message["jobs"][:1000]]
            await self.publish([raw for raw in listed if raw is not None])
        if kind not in _JOB_MESSAGES or not isinstance(message.get("job_id"), str):
            return
        if self.settings.database is None:
            raw = self.stream_jobs.update(message)
            await self.publish([raw] if raw is not None else [])
            return
        job_id = message["job_id"]
        if kind == "task_started":
            self.note_start(job_id, message)
        jobs = await asyncio.to_thread(read_jobs, self.settings.database, job_id)
        for raw in jobs:
            mark_started(raw, self.started.get(job_id, {}))
        if kind in ("job_completed", "job_failed", "job_cancelled"):
            self.started.pop(job_id, None)
        await self.publish(jobs)

    def note_start(self, job_id: str, message: dict[str, Any]) -> None:
        data = message.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("task_index"), int):
            return
        if job_id in self.started or len(self.started) < MAX_OPEN_JOBS:  # bounded, whatever the stream says
            at = message.get("timestamp")
            self.started.setdefault(job_id, {})[data["task_index"]] = at if isinstance(at, str) and parse_time(at) else None

    async def follow_once(self, session: aiohttp.ClientSession) -> None:
        """Connect to the stream, catch up, then follow it until it ends."""
        url = self.settings.url + STREAM_PATH
        async with session.get(url, headers={"Accept": "text/event-stream"}) as response:
            if response.status != 200 or response.content_type != "text/event-stream":
                raise NotAStream(f"{STREAM_PATH} answered {response.status} {response.content_type}, "
                                 "not a job stream: is this Borgitory's address?")
            log.info("source %s: following %s%s", self.settings.name, self.shown, STREAM_PATH)
            if self.settings.database is not None:
                await self.catch_up()  # after connecting: what ends meanwhile is in the stream too
            self.connected = True  # only now: an unreadable database keeps the backoff growing
            messages = StreamMessages()
            async for chunk in response.content.iter_any():
                for message in messages.feed(chunk.decode("utf-8", errors="replace")):
                    await self.on_message(message)

    async def run(self) -> None:
        """Follow until cancelled; reconnect with backoff (1 s doubling to max_delay, with jitter)."""
        delay = 1.0
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10, sock_read=READ_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                self.connected = False
                try:
                    await self.follow_once(session)
                    problem = "the stream ended"
                except (aiohttp.ClientError, TimeoutError, OSError, NotAStream) as exc:
                    problem = str(exc) or type(exc).__name__
                except sqlite3.Error as exc:
                    problem = f"cannot read {self.settings.database}: {exc}"
                except Exception as exc:  # whatever Borgitory sends, following goes on
                    log.exception("source %s: unexpected error", self.settings.name)
                    problem = type(exc).__name__
                if self.connected:
                    delay = 1.0
                wait = min(delay, self.settings.max_delay) * random.uniform(0.8, 1.2)
                log.warning("source %s: %s (%s); retrying in %.1f s", self.settings.name, self.shown,
                            scrub(problem)[:300], wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.settings.max_delay)


async def follow(settings: SourceSettings, ingest: Ingest) -> None:
    """`[[sources]] kind = "borgitory"`: follow a Borgitory instance until cancelled."""
    await Follower(settings, ingest).run()
