"""The healthchecks.io-compatible ping API, so tools that already ping
healthchecks report to hookbus unchanged: borgmatic's `healthchecks` hook,
runitor, resticprofile, autorestic's curl recipes, Backrest's healthchecks hook.

    GET/HEAD/POST /ping/{key}            success
                  /ping/{key}/start      a run begins
                  /ping/{key}/fail       failure
                  /ping/{key}/log        log text, no change of state
                  /ping/{key}/{0-255}    exit status: 0 success, else failure
                  ?rid=UUID              tells concurrent runs of one check apart

`[[checks]]` in the configuration names each key's job and repository. A start
and the next success/failure of the same key (and `rid`) are one job:
`backup.job.started`, then `backup.job.finished` with the same `job_id`. The
open start is kept in the journal's SQLite, so a restart of hookbus in between
does not split the job. A POST body (the tool's log) is kept as the job's
output tail, cut to the limit announced in the `Ping-Body-Limit` header.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from hookbus.adapters.common import OpenJob, error_line, job_finished, job_started, new_job
from hookbus.bus.events.event import Event, new_id
from hookbus.bus.events.text import cut_front
from hookbus.bus.events.times import now_rfc3339
from hookbus.bus.events.vocabulary import Outcome, Reason
from hookbus.bus.http.answers import BadRequest
from hookbus.bus.http.keys import BROKER
from hookbus.bus.settings import UUID, Check
from hookbus.bus.transport.broker import Broker

PING_BODY_LIMIT = 100_000  # what healthchecks.io keeps of a ping body, and what borgmatic sends by default
FINISHED_ID = "{job_id}/job.finished"
_DIGITS = re.compile(r"[0-9]+")


@dataclass
class PingState:
    broker: Broker
    checks: dict[str, Check]
    body_limit: int


PING = web.AppKey("ping", PingState)


def add_routes(app: web.Application, checks: Sequence[Check]) -> None:
    """Serve the ping API on app, for these checks (the application adds it)."""
    broker = app[BROKER]
    app[PING] = PingState(
        broker=broker,
        checks={check.key: check for check in checks if check.key is not None},
        # Half the largest event, so a full body always fits with the job's other fields.
        body_limit=min(PING_BODY_LIMIT, broker.bus.max_event_bytes // 2),
    )
    for path in ("/ping/{key}", "/ping/{key}/{action}"):
        app.router.add_get(path, handle)  # HEAD too
        app.router.add_post(path, handle)


@dataclass(frozen=True)
class Ping:
    action: str  # start | log | finish
    exit_status: int | None  # for finish: 0 success, else failure; None for /fail
    rid: str | None
    body: str | None


def parse_action(action: str | None) -> tuple[str, int | None]:
    """Given the path part after the key, return (action, exit status)."""
    if action is None or action == "":
        return "finish", 0
    if action in ("start", "log"):
        return action, None
    if action == "fail":
        return "finish", None
    # ASCII digits only: str.isdigit() also takes '²', '①', '𝟘', '１' (and int() some of them).
    if _DIGITS.fullmatch(action):
        digits = action.lstrip("0") or "0"  # leading zeros are fine; thousands of digits are no int()
        if len(digits) > 3 or int(digits) > 255:
            raise BadRequest(400, f"exit status must be between 0 and 255, not {action[:40]}", "exit_status")
        return "finish", int(digits)
    raise BadRequest(404, f"unknown ping action {action[:40]!r}; use start, fail, log or an exit status 0-255", "action")


def find_check(state: PingState, key: str) -> Check:
    check = state.checks.get(key.lower() if UUID.fullmatch(key) else key)
    if check is None:
        raise BadRequest(404, "no check has this key; name it in a [[checks]] table of the configuration", "key")
    return check


async def handle(request: web.Request) -> web.Response:
    state = request.app[PING]
    check = find_check(state, request.match_info["key"])
    action, exit_status = parse_action(request.match_info.get("action"))
    rid = request.query.get("rid") or None
    if rid is not None and not UUID.fullmatch(rid):
        raise BadRequest(400, "rid must be a UUID", "rid")
    body = await request.read() if request.method == "POST" else b""
    text = cut_front(body.decode(errors="replace"), state.body_limit) if body else None
    await record(state, check, Ping(action, exit_status, rid.lower() if rid else None, text))  # an EventError: guard()
    # Plain "OK" as healthchecks answers; the header tells runitor and others how much body we keep.
    return web.Response(text="OK", headers={"Ping-Body-Limit": str(state.body_limit)})


async def record(state: PingState, check: Check, ping: Ping) -> list[Event]:
    """Turn one ping into its events and commit them together with the change to
    the open job, in one write of the journal (`Broker.ingest_with_job`): the
    journal's writer runs one write at a time, so a start and its finish never
    interleave, and concurrent pings share a commit as events do."""
    key = f"ping:{check.key}:{ping.rid or ''}"
    source = f"hookbus://ping/{check.job}"
    if ping.action == "start":
        job = new_job()
        done = await state.broker.ingest_with_job(key, lambda _: [started(source, check, job, ping)], start=job)
    elif ping.action == "log":
        done = await state.broker.ingest_with_job(key, lambda open_job: [log_event(source, check, open_job, ping)])
    else:  # the job is closed in the same commit; one whose finished event is stored already counts as closed
        done = await state.broker.ingest_with_job(key, lambda open_job: [finished(source, check, open_job, ping)],
                                                  finish=(source, FINISHED_ID))
    return [event for event, _ in done.events]


def started(source: str, check: Check, job: OpenJob, ping: Ping) -> Event:
    return job_started(source, job.job_id, job=check.job, repository=check.repository, started_at=job.started_at,
                       rid=ping.rid, message=ping.body)


def log_event(source: str, check: Check, job: OpenJob | None, ping: Ping) -> Event:
    data = {"job_id": job.job_id if job else None, "job": check.job, "repository": check.repository,
            "message": ping.body or "", "rid": ping.rid}
    return Event(id=new_id(), source=source, type="backup.log", time=now_rfc3339(), subject=check.repository, data=data)


def finished(source: str, check: Check, job: OpenJob | None, ping: Ping) -> Event:
    ok = ping.exit_status == 0
    if ok:
        error = None
    elif ping.exit_status is None:
        error = error_line(ping.body or "") or "the run reported a failure (/fail)"
    else:
        error = error_line(ping.body or "") or f"exited with status {ping.exit_status}"
    return job_finished(
        source, job.job_id if job else new_id(), job=check.job, repository=check.repository,
        outcome=Outcome.SUCCESS if ok else Outcome.FAILED, reason=None if ok else Reason.BACKUP_ERROR, error=error,
        started_at=job.started_at if job else None, exit_status=ping.exit_status, output_tail=ping.body, rid=ping.rid,
    )
