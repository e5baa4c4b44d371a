"""The read pages (DESIGN §11): overview, jobs, one job, checks, events,
subscribers, silences. Each reads what the API reads; blocking store reads run
in a thread."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from hookbus.bus.events.event import compile_globs
from hookbus.bus.http.answers import int_param
from hookbus.bus.http.history import HISTORY, STATUSES, find, job_events, select
from hookbus.bus.http.keys import BROKER, CHECKS
from hookbus.bus.http.ui import views
from hookbus.bus.http.ui.render import page

PAGE_SIZE = 50
EVENT_WINDOW = 2000  # rows scanned per page of a filtered event list
# What an action did, said on the page it redirects to (`?done=…`: a code, never text from the URL).
DONE = {"paused": "Check paused.", "resumed": "Check resumed.", "unchanged": "Nothing to change.",
        "retried": "Dead letter queued for redelivery.", "added": "Silence added.", "expired": "Silence expired."}


def _checks(request: web.Request) -> list[dict[str, Any]]:
    return request.app[CHECKS].overview() if CHECKS in request.app else []


def _url(path: str, **query: Any) -> str:
    kept = {k: v for k, v in query.items() if v not in (None, "")}
    return path + ("?" + urlencode(kept) if kept else "")


async def overview(request: web.Request) -> web.Response:
    history = request.app[HISTORY]
    await history.refresh()
    checks = _checks(request)
    configured = list(request.app[CHECKS].checks.values()) if CHECKS in request.app else []
    rows = views.job_rows(list(history.jobs.values()), configured, {c["name"]: c for c in checks}, datetime.now(UTC).date())
    return page(request, "overview.html", jobs=rows, checks=checks, actions=False)


async def jobs(request: web.Request) -> web.Response:
    history = request.app[HISTORY]
    page_no = int_param(request, "page", 1, 1, 10**6)
    name, outcome = request.query.get("job") or None, request.query.get("outcome") or None
    found = await select(request)
    start = (page_no - 1) * PAGE_SIZE
    shown = found[start:start + PAGE_SIZE]
    prev_url = _url("/jobs", job=name, outcome=outcome, page=page_no - 1) if page_no > 1 else None
    next_url = _url("/jobs", job=name, outcome=outcome, page=page_no + 1) if start + PAGE_SIZE < len(found) else None
    names = sorted({j["job"] for j in history.jobs.values() if isinstance(j["job"], str)})
    return page(request, "jobs.html", jobs=shown, job=name, outcome=outcome, outcomes=STATUSES, names=names,
                page_no=page_no, total=len(found), prev_url=prev_url, next_url=next_url)


async def job(request: web.Request) -> web.Response:
    found = await find(request)
    shown = request.app[HISTORY].view(found, True)
    trail = flat_trail(await job_events(request.app[BROKER].journal, found))
    return page(request, "job.html", job=shown, trail=trail)


def flat_trail(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The job's delivery trail as rows: each attempt of each subscriber at each event, in event order."""
    return [{"type": e["type"], "seq": e["seq"], "subscriber": d["subscriber"], **attempt}
            for e in events for d in e["deliveries"] for attempt in d["attempts"]]


async def checks(request: web.Request) -> web.Response:
    return page(request, "checks.html", checks=_checks(request), actions=CHECKS in request.app,
                message=DONE.get(request.query.get("done", "")))


def event_row(seq: int, body: bytes) -> dict[str, Any]:
    """One journal entry as the events page shows it."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        event = {}
    data = event.get("data") if isinstance(event, dict) else None
    job_id = data.get("job_id") if isinstance(data, dict) and isinstance(data.get("job_id"), str | int) else None
    text = orjson.dumps(data).decode() if data is not None else ""
    return {"seq": seq, "time": event.get("time"), "type": event.get("type"), "source": event.get("source"),
            "job_id": job_id, "data_text": text}


async def events(request: web.Request) -> web.Response:
    journal = request.app[BROKER].journal
    pattern = request.query.get("type") or None
    matcher = compile_globs([pattern]).match if pattern else None
    head = journal.last_seq
    before = int_param(request, "before", head + 1, 1, 2**62)
    window = EVENT_WINDOW if matcher else PAGE_SIZE
    after = max(0, before - 1 - window)
    stored, _ = await asyncio.to_thread(journal.read, after, window, matcher, window)
    shown = [e for e in stored if e.seq < before][-PAGE_SIZE:]
    shown.reverse()
    rows = [event_row(e.seq, e.body) for e in shown]
    oldest = shown[-1].seq if len(shown) == PAGE_SIZE else after + 1
    next_url = _url("/events", type=pattern, before=oldest) if after > 0 else None
    prev_url = None
    if before <= head:
        newer = before + window
        prev_url = _url("/events", type=pattern, before=newer if newer <= head else None)
    live = before > head
    return page(request, "events.html", events=rows, type=pattern, head=head, live=live,
                stream_url=_url("/events/stream", type=pattern, after=head), prev_url=prev_url, next_url=next_url)


async def subscribers(request: web.Request) -> web.Response:
    status = await asyncio.to_thread(request.app[BROKER].status)
    return page(request, "subscribers.html", subscribers=status["subscribers"], letters=status["dead_letters"],
                nodes=status["nodes"], work=status["work"],
                head=status["head"], retained=status["events_retained"], message=DONE.get(request.query.get("done", "")))


async def silences(request: web.Request) -> web.Response:
    now = time.time()
    every = [s.to_json() for s in request.app[CHECKS].silences.all()] if CHECKS in request.app else []
    active = [s for s in every if s["starts_at"] <= now < s["ends_at"]]
    past = [s for s in every if s["ends_at"] <= now]
    names = sorted(request.app[CHECKS].checks) if CHECKS in request.app else []
    return page(request, "silences.html", active=active, past=list(reversed(past)), check_names=names,
                message=DONE.get(request.query.get("done", "")))
