"""borgmatic: command hooks → job events.

borgmatic's healthchecks hook already reports to hookbus through the ping API
(adapters/ping.py). This adapter is for its `commands:` hooks, which
interpolate `{repository}`, `{error}` and `{output}` (shell-quoted by borgmatic
itself) into a command:

    commands:
        - before: repository
          run: [hookbus emit --from borgmatic --state start --repository {repository}]
        - after: repository
          states: [finish]
          run: [hookbus emit --from borgmatic --state finish --repository {repository}]
        - after: error
          run: [hookbus emit --from borgmatic --state fail --repository {repository} --error {error} --output {output}]

`POST /ingest/borgmatic` takes the same as JSON (`state`, `repository`,
`error`, `output`, `job`), for a hook that would rather run curl. A start keeps
its job id under (job, repository) until that repository's finish or failure.
"""

from __future__ import annotations

import argparse
from typing import Any

from aiohttp import web

from hookbus.adapters.common import (
    OUTPUT_TAIL_BYTES,
    FileJobs,
    JournalJobs,
    OpenJob,
    error_line,
    job_finished,
    job_started,
    json_object,
    new_job,
)
from hookbus.adapters.common import field as get
from hookbus.bus.events.event import Event, EventError
from hookbus.bus.events.host import host_name
from hookbus.bus.events.text import cut_front
from hookbus.bus.events.vocabulary import Outcome, Reason
from hookbus.bus.http.keys import BROKER

STATES = ("start", "finish", "fail")
DEFAULT_JOB = "borgmatic"


def key_of(job: str, repository: str | None) -> str:
    return f"borgmatic:{job}:{repository or ''}"


def start_event(source: str, job: str, repository: str | None, opened: OpenJob, host: str | None) -> Event:
    return job_started(source, opened.job_id, job=job, repository=repository or None, started_at=opened.started_at,
                       host=host)


def end_event(source: str, job: str, repository: str | None, state: str, opened: OpenJob | None,
              error: str | None, output: str | None) -> Event:
    ok = state == "finish"
    extra: dict[str, Any] = {}
    if output:
        extra["output_tail"] = cut_front(output, OUTPUT_TAIL_BYTES)
    return job_finished(
        source, opened.job_id if opened else new_job().job_id, job=job, repository=repository or None,
        outcome=Outcome.SUCCESS if ok else Outcome.FAILED, reason=None if ok else Reason.BACKUP_ERROR,
        error=None if ok else (error or error_line(output or "") or "borgmatic reported an error"),
        started_at=opened.started_at if opened else None, **extra)


def from_cli(args: argparse.Namespace, jobs: FileJobs | None = None) -> list[Event]:
    """`hookbus emit --from borgmatic --state start|finish|fail [--repository R] [--error E] [--output O]`."""
    state = args.state
    if state not in STATES:
        raise ValueError("--from borgmatic needs --state start, finish or fail (see the command hooks in docs/borgmatic.md)")
    job = args.job or DEFAULT_JOB
    repository = args.repository or args.subject
    jobs = jobs or FileJobs()
    key = key_of(job, repository)
    host = host_name()
    source = f"borgmatic://{host}/{job}"
    if state == "start":
        opened = new_job()
        jobs.open_sync(key, opened)
        return [start_event(source, job, repository, opened, host)]
    opened_job = jobs.get_sync(key)
    if opened_job is not None:
        jobs.close_sync(key, opened_job.job_id)
    return [end_event(source, job, repository, state, opened_job, args.error, args.output)]


async def ingest(request: web.Request) -> list[Event]:
    obj = json_object(await request.read())
    state = get(obj, "state", str, required=True)
    if state not in STATES:
        raise EventError("state", f"must be one of {', '.join(STATES)}, not {state[:40]!r}")
    job = get(obj, "job", str) or request.query.get("job") or DEFAULT_JOB
    repository = get(obj, "repository", str) or request.query.get("repository")
    error, output = get(obj, "error", str), get(obj, "output", str)
    jobs = JournalJobs(request.app[BROKER].journal)
    key = key_of(job, repository)
    source = f"borgmatic://{request.remote or 'unknown'}/{job}"
    if state == "start":
        opened = new_job()
        await jobs.open(key, opened)
        return [start_event(source, job, repository, opened, None)]
    opened_job = await jobs.get(key)
    if opened_job is not None:
        await jobs.close(key, opened_job.job_id)
    return [end_event(source, job, repository, state, opened_job, error, output)]
