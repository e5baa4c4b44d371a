"""Job history for `GET /api/jobs` and `GET /api/jobs/{job_id}` (with each of the
job's events and its delivery trail), built from the journal.

Every `backup.job.*` and `backup.task.*` event, from any source (`hookbus
run`, a Borgitory or borgmatic adapter, `hookbus emit`), updates the job it
names by `job_id`. The index reads only what is new in the journal on each
request, so it stays cheap however long the journal is.
"""

from __future__ import annotations

import asyncio
import sys
from collections import OrderedDict
from typing import Any

import orjson
from aiohttp import web

from hookbus.bus.events.event import compile_globs
from hookbus.bus.events.vocabulary import Outcome, TaskStatus
from hookbus.bus.http.answers import BadRequest, int_param, ok
from hookbus.bus.http.trail import trail_for
from hookbus.bus.store.base import Store

MAX_JOBS = 5000  # the newest jobs kept in memory
MAX_JOB_EVENTS = 500  # a job's events whose seqs are kept (for its delivery trail); later ones are counted
_TYPES = compile_globs(["backup.job.*", "backup.task.*"]).match


class JobHistory:
    def __init__(self, journal: Store, max_jobs: int = MAX_JOBS) -> None:
        self.journal = journal
        self.max_jobs = max_jobs
        self.jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.scanned = 0
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        if self.scanned >= self.journal.last_seq:
            return  # nothing appended since the last request: no thread, no read
        async with self._lock:
            await asyncio.to_thread(self._catch_up)

    def _catch_up(self) -> None:
        while True:
            stored, scanned = self.journal.read(self.scanned, 1000, _TYPES)
            for event in stored:
                self.apply(orjson.loads(event.body), event.seq)
            if scanned <= self.scanned:
                return
            self.scanned = scanned

    def _job(self, job_id: str, event: dict[str, Any]) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job is None:
            job = {"job_id": job_id, "job": None, "repository": event.get("subject"), "source": event.get("source"),
                   "job_type": None, "host": None, "status": TaskStatus.RUNNING, "outcome": None, "reason": None,
                   "failed_hook": None, "failed_tasks": [], "counts": None, "error": None, "started_at": None,
                   "finished_at": None, "duration_s": None, "tasks": [], "first_seq": None, "last_seq": None,
                   "events": [], "events_total": 0}
            self.jobs[job_id] = job
            while len(self.jobs) > self.max_jobs:
                self.jobs.popitem(last=False)
        return job

    def apply(self, event: dict[str, Any], seq: int) -> None:
        """Fold one event into the job it names."""
        data = event.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("job_id"), (str, int)) or data.get("job_id") == "":
            return
        job = self._job(str(data["job_id"]), event)
        job["first_seq"] = job["first_seq"] or seq
        job["last_seq"] = seq
        job["events_total"] += 1
        if len(job["events"]) < MAX_JOB_EVENTS:
            job["events"].append((seq, sys.intern(str(event.get("type")))))
        for key in ("job", "repository", "job_type", "host"):
            if data.get(key) is not None:
                job[key] = data[key]
        type_ = event.get("type")
        if type_ == "backup.job.started":
            job["started_at"] = data.get("started_at") or event.get("time")
            if isinstance(data.get("tasks"), list) and not job["tasks"]:
                job["tasks"] = [dict(t) for t in data["tasks"] if isinstance(t, dict)]
        elif type_ in ("backup.task.started", "backup.task.finished") and isinstance(data.get("task"), dict):
            self._task(job, data["task"])
        elif type_ == "backup.job.finished":
            for key in ("outcome", "reason", "failed_hook", "failed_tasks", "counts", "error", "duration_s", "stats"):
                if key in data:
                    job[key] = data[key]
            job["started_at"] = data.get("started_at") or job["started_at"]
            job["finished_at"] = data.get("finished_at") or event.get("time")
            job["status"] = data.get("outcome") or "finished"
            if isinstance(data.get("tasks"), list) and data["tasks"]:
                job["tasks"] = [dict(t) for t in data["tasks"] if isinstance(t, dict)]

    @staticmethod
    def _task(job: dict[str, Any], task: dict[str, Any]) -> None:
        tasks: list[dict[str, Any]] = job["tasks"]
        by = "index" if task.get("index") is not None else "name"
        for i, known in enumerate(tasks):
            if known.get(by) == task.get(by):
                # backup.job.finished keeps a short output tail; the task's own event has the longer one
                tasks[i] = {**known, **task}
                return
        tasks.append(dict(task))
        tasks.sort(key=lambda t: (t.get("index") is None, t.get("index") or 0))

    def view(self, job: dict[str, Any], with_tasks: bool) -> dict[str, Any]:
        out = {k: v for k, v in job.items() if k not in ("tasks", "events")}
        if with_tasks:
            # `task_type` as Borgitory names it, so `jq '.tasks[] | select(.task_type=="hook")'` works here too
            out["tasks"] = [{**t, "task_type": t.get("kind")} for t in job["tasks"]]
        else:
            out["tasks_total"] = len(job["tasks"])
        return out


HISTORY = web.AppKey("job_history", JobHistory)
STATUSES = (TaskStatus.RUNNING.value, *(o.value for o in Outcome))  # what a job's `status` may be


async def select(request: web.Request) -> list[dict[str, Any]]:
    """The jobs the query's `job` and `outcome` ask for, newest first (the API and the page)."""
    history = request.app[HISTORY]
    name, outcome = request.query.get("job") or None, request.query.get("outcome") or None
    if outcome is not None and outcome not in STATUSES:
        raise BadRequest(400, f"outcome must be one of {', '.join(STATUSES)}", "outcome")
    await history.refresh()
    return [j for j in reversed(history.jobs.values())
            if (name is None or j["job"] == name) and (outcome is None or j["status"] == outcome)]


async def find(request: web.Request) -> dict[str, Any]:
    """The job `{job_id}`, or 404."""
    history = request.app[HISTORY]
    job_id = request.match_info["job_id"]
    await history.refresh()
    job = history.jobs.get(job_id)
    if job is None:
        raise BadRequest(404, f"no job {job_id!r} in the journal", "job_id")
    return job


async def list_jobs(request: web.Request) -> web.Response:
    limit = int_param(request, "limit", 50, 1, 1000)
    jobs = await select(request)
    return ok({"jobs": [request.app[HISTORY].view(j, False) for j in jobs[:limit]]})


async def get_job(request: web.Request) -> web.Response:
    history, job = request.app[HISTORY], await find(request)
    return ok({**history.view(job, True), "events": await job_events(history.journal, job)})


async def job_events(journal: Store, job: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's events (the first MAX_JOB_EVENTS), each with its delivery trail (trail.trail_for)."""
    events: list[tuple[int, str]] = list(job["events"])
    trail = await trail_for(journal, [seq for seq, _ in events])
    return [{"seq": seq, "type": type_, "deliveries": trail.get(seq, [])} for seq, type_ in events]


def add_routes(app: web.Application, journal: Store) -> None:
    app[HISTORY] = JobHistory(journal)
    app.router.add_get("/api/jobs", list_jobs)
    app.router.add_get("/api/jobs/{job_id}", get_job)
