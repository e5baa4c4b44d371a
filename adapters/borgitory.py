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
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from aiohttp import web

from hookbus.adapters.common import (
    OUTPUT_TAIL_BYTES,
    FileJobs,
    count,
    job_finished,
    job_started,
    json_object,
    new_job,
    task_event,
    timestamp,
)
from hookbus.adapters.common import field as get
from hookbus.bus.events.event import Event, EventError
from hookbus.bus.events.host import host_name
from hookbus.bus.events.text import cut_front
from hookbus.bus.events.times import seconds_between
from hookbus.bus.events.vocabulary import Outcome, Phase, Reason, TaskKind, TaskStatus

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
