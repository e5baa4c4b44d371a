"""Backrest: a command hook's template variables → task (and job) events.

Backrest renders a command hook as a Go template. The hook hookbus documents
passes the variables as one JSON object (Backrest's `.JsonMarshal` does the
quoting, so an error text can never break the command):

    {"event": "{{ .Event }}", "task": {{ .JsonMarshal .Task }}, "repo": {{ .JsonMarshal .Repo.Id }},
     "plan": {{ .JsonMarshal .Plan.Id }}, "snapshot_id": {{ .JsonMarshal .SnapshotId }},
     "error": {{ .JsonMarshal .Error }}, "duration_s": {{ .Duration.Seconds }},
     "time": "{{ .FormatTime .CurTime }}", "stats": {{ .JsonMarshal .SnapshotStats }}}

to `hookbus emit --from backrest` on stdin, or to `POST /ingest/backrest`.

Conditions map as DESIGN §1 says: `CONDITION_SNAPSHOT_START` is
`backup.task.started` (kind backup), `_END` is `backup.task.finished` whatever
the status, `_SUCCESS`/`_ERROR`/`_WARNING`/`_SKIPPED` that status; PRUNE, CHECK
and FORGET likewise with their kinds; `CONDITION_ANY_ERROR` a failed task. A
snapshot is also the job: its start gives `backup.job.started`, its end
`backup.job.finished` with the restic summary as `stats`. The condition itself
is kept in `data.condition`. A START keeps its job id under (repo, plan, kind)
so that the END of the same operation gets it; ids of the end events derive
from that job, so two conditions that fire for one end (END and SUCCESS) give
one event, not two.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from hookbus.adapters import restic
from hookbus.adapters.common import (
    FileJobs,
    JournalJobs,
    OpenJob,
    decode_json,
    job_finished,
    job_started,
    json_type,
    new_job,
    task_event,
    timestamp,
)
from hookbus.adapters.common import field as get
from hookbus.bus.events.event import Event, EventError, new_id
from hookbus.bus.events.host import host_name
from hookbus.bus.events.times import parse_time
from hookbus.bus.events.vocabulary import Outcome, Phase, Reason, TaskKind, TaskStatus
from hookbus.bus.http.keys import BROKER

KINDS = {"SNAPSHOT": TaskKind.BACKUP, "PRUNE": TaskKind.PRUNE, "CHECK": TaskKind.CHECK, "FORGET": TaskKind.FORGET}
STATES = ("START", "END", "SUCCESS", "ERROR", "WARNING", "SKIPPED")
# Backrest's condition numbers (proto/v1/config.proto), for `{{ .JsonMarshal .Event }}`.
NUMBERS = {1: "CONDITION_ANY_ERROR", 2: "CONDITION_SNAPSHOT_START", 3: "CONDITION_SNAPSHOT_END",
           4: "CONDITION_SNAPSHOT_ERROR", 5: "CONDITION_SNAPSHOT_WARNING", 6: "CONDITION_SNAPSHOT_SUCCESS",
           7: "CONDITION_SNAPSHOT_SKIPPED", 100: "CONDITION_PRUNE_START", 101: "CONDITION_PRUNE_ERROR",
           102: "CONDITION_PRUNE_SUCCESS", 200: "CONDITION_CHECK_START", 201: "CONDITION_CHECK_ERROR",
           202: "CONDITION_CHECK_SUCCESS", 300: "CONDITION_FORGET_START", 301: "CONDITION_FORGET_ERROR",
           302: "CONDITION_FORGET_SUCCESS"}
# What `{{ .EventName .Event }}` prints, for hooks written with it.
NAMES = {"error": "CONDITION_ANY_ERROR", **{f"{'snapshot' if k == 'SNAPSHOT' else k.lower()} {s.lower()}": f"CONDITION_{k}_{s}"
                                            for k in KINDS for s in STATES}}
CONDITIONS = frozenset(NUMBERS.values())
# Backrest's own wording when a snapshot was made but some files could not be read.
PARTIAL = "partial backup"
SLACK_S = 300.0  # how much earlier than its operation's start a START may have been kept


@dataclass(frozen=True)
class Hook:
    condition: str
    kind: str
    state: str  # START, END, SUCCESS, ERROR, WARNING, SKIPPED, or ERROR for ANY_ERROR
    task: str | None
    repo: str
    plan: str | None
    snapshot_id: str | None
    error: str | None
    duration_s: float | None
    time: str | None
    stats: dict[str, Any] | None

    @property
    def key(self) -> str:
        return f"backrest:{self.repo}:{self.plan or ''}:{self.kind}"

    @property
    def is_start(self) -> bool:
        return self.state == "START"


def parse_condition(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise EventError("event", f"must be a Backrest condition such as CONDITION_SNAPSHOT_END, not {json_type(value)}")
    if isinstance(value, int):
        name = NUMBERS.get(value)
    else:
        text = value.strip()
        name = text if text in CONDITIONS else NAMES.get(text.lower()) or NUMBERS.get(int(text) if text.isdigit() else -1)
    if name is None:
        raise EventError("event", f"unknown Backrest condition {str(value)[:60]!r}")
    return name


def kind_of_task(task: str | None) -> str:
    """For CONDITION_ANY_ERROR: Backrest's task names begin with what the task does."""
    first = (task or "").strip().lower().split(" ", 1)[0]
    return first if first in KINDS.values() else "other"


def parse_hook(obj: Any) -> Hook:
    """Given the hook's JSON, return it checked; raise EventError naming the field."""
    if not isinstance(obj, dict):
        raise EventError("body", f"must be a JSON object, not {json_type(obj)}")
    if obj.get("event") is None:
        raise EventError("event", "required field is missing")
    condition = parse_condition(obj["event"])
    task = get(obj, "task", str)
    if condition == "CONDITION_ANY_ERROR":
        kind, state = kind_of_task(task), "ERROR"
    else:
        _, word, state = condition.split("_", 2)
        kind = KINDS[word]
    repo = get(obj, "repo", str, required=True)
    if not repo.strip():
        raise EventError("repo", "must not be empty")
    stats = obj.get("stats")
    if stats is not None:
        if not isinstance(stats, dict):
            raise EventError("stats", f"must be an object (Backrest's SnapshotStats), not {json_type(stats)}")
        restic.check_summary(stats, "stats")
    duration = get(obj, "duration_s", float)
    if duration is not None and duration < 0:
        raise EventError("duration_s", "must not be negative")
    return Hook(condition=condition, kind=kind, state=state, task=task, repo=repo, plan=get(obj, "plan", str) or None,
                snapshot_id=get(obj, "snapshot_id", str) or None, error=get(obj, "error", str) or None,
                duration_s=duration, time=timestamp(obj, "time"), stats=stats)


def status_of(hook: Hook) -> tuple[TaskStatus, bool]:
    """(task status, warning) for an end condition."""
    if hook.state == "SUCCESS":
        return TaskStatus.COMPLETED, False
    if hook.state == "SKIPPED":
        return TaskStatus.SKIPPED, False
    if hook.state == "WARNING":
        return TaskStatus.COMPLETED, True
    if hook.state == "ERROR":
        return TaskStatus.FAILED, False
    # END: Backrest sets .Error for a failure, and for a partial backup (a warning).
    if hook.error and hook.error.lower().startswith(PARTIAL):
        return TaskStatus.COMPLETED, True
    return (TaskStatus.FAILED, False) if hook.error else (TaskStatus.COMPLETED, False)


def same_run(hook: Hook, job: OpenJob | None) -> OpenJob | None:
    """The job kept at a START, if this end can belong to it: an end whose own
    start never reached hookbus must not be filed under an older run."""
    if job is None or hook.duration_s is None:
        return job
    start, end = parse_time(job.started_at), parse_time(hook.time) if hook.time else datetime.now(UTC)
    if start is None or end is None:
        return job
    # Backrest measures the duration from its operation's start, a little before the START hook ran.
    return job if (end - start).total_seconds() <= hook.duration_s + SLACK_S else None


def events_for(hook: Hook, job: OpenJob | None, source: str) -> list[Event]:
    """The events of one hook call; `job` is the operation's job (from its START), if known."""
    if job is None:
        # No START seen: the snapshot id still ties END and SUCCESS of one backup together.
        job = OpenJob(f"backrest-{hook.snapshot_id}" if hook.snapshot_id else new_id(), "")
    started_at = job.started_at or None
    task: dict[str, Any] = {"index": 0, "name": hook.task or hook.kind, "kind": hook.kind, "phase": Phase.MAIN}
    extra = {"condition": hook.condition, "repository": hook.repo, "plan": hook.plan}
    if hook.is_start:
        out = [task_event(source, job.job_id, "started", {**task, "status": TaskStatus.RUNNING}, subject=hook.repo,
                          event_key=hook.kind, **extra)]
        if hook.kind == TaskKind.BACKUP:
            out.insert(0, job_started(source, job.job_id, job=hook.plan, repository=hook.repo, started_at=started_at,
                                      plan=hook.plan, condition=hook.condition, task_name=hook.task))
        return out
    status, warning = status_of(hook)
    task.update(status=status, message=hook.error, duration_s=hook.duration_s)
    if warning:
        task["warning"] = True
    out = [task_event(source, job.job_id, "finished", task, subject=hook.repo, event_key=hook.kind,
                      snapshot_id=hook.snapshot_id, **extra)]
    if hook.kind == TaskKind.BACKUP:
        outcome = Outcome.FAILED if status == TaskStatus.FAILED else Outcome.WARNING if warning else Outcome.SUCCESS
        stats = restic.stats(hook.stats) if hook.stats else None
        out.append(job_finished(
            source, job.job_id, job=hook.plan, repository=hook.repo, outcome=outcome,
            reason=Reason.BACKUP_ERROR if outcome == Outcome.FAILED else None, error=hook.error, started_at=started_at,
            finished_at=hook.time, duration_s=hook.duration_s, snapshot_id=hook.snapshot_id, stats=stats,
            plan=hook.plan, condition=hook.condition, skipped=hook.state == "SKIPPED" or None,
            failed_tasks=[TaskKind.BACKUP] if outcome == Outcome.FAILED else []))
    return out


async def ingest(request: web.Request) -> list[Event]:
    hook = parse_hook(decode_json(await request.read()))
    jobs = JournalJobs(request.app[BROKER].journal)
    if hook.is_start:
        job: OpenJob | None = new_job()
        await jobs.open(hook.key, job)  # type: ignore[arg-type]
    else:
        job = same_run(hook, await jobs.get(hook.key))  # kept after the end: END and SUCCESS share it
    return events_for(hook, job, f"backrest://{request.query.get('instance') or 'backrest'}/{hook.repo}")


def from_cli(args: argparse.Namespace, jobs: FileJobs | None = None) -> list[Event]:
    """`hookbus emit --from backrest`: the hook's JSON on stdin."""
    if sys.stdin.isatty():
        raise ValueError("--from backrest reads the hook's JSON on stdin (see the command hook in docs/backrest.md)")
    try:
        hook = parse_hook(decode_json(sys.stdin.buffer.read(), "stdin"))
    except EventError as exc:
        raise ValueError(f"backrest hook JSON: {exc}") from None
    jobs = jobs or FileJobs()
    if hook.is_start:
        job: OpenJob | None = new_job()
        jobs.open_sync(hook.key, job)  # type: ignore[arg-type]
    else:
        job = same_run(hook, jobs.get_sync(hook.key))
    return events_for(hook, job, f"backrest://{host_name()}/{hook.repo}")
