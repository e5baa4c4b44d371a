"""Reading and operating: the journal, subscribers, dead letters, health,
metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from hookbus.bus.events.event import compile_globs
from hookbus.bus.http import checks
from hookbus.bus.http.answers import BadRequest, id_param, int_param, ok
from hookbus.bus.http.keys import BROKER, CHECKS
from hookbus.bus.http.openapi import OPENAPI


async def get_events(request: web.Request) -> web.Response:
    after = int_param(request, "after", 0, 0, 2**62)
    limit = int_param(request, "limit", 100, 1, 1000)
    pattern = request.query.get("type")
    matcher = compile_globs([pattern]).match if pattern else None
    journal = request.app[BROKER].journal
    stored, scanned = await asyncio.to_thread(journal.read, after, limit, matcher)
    events = [{**orjson.loads(e.body), "seq": e.seq} for e in stored]
    return ok({"events": events, "next_after": scanned, "head": journal.last_seq})


async def get_subscribers(request: web.Request) -> web.Response:
    status = await asyncio.to_thread(request.app[BROKER].status)
    return ok({"head": status["head"], "subscribers": status["subscribers"], "nodes": status["nodes"],
               "work": status["work"]})


async def get_dead_letters(request: web.Request) -> web.Response:
    state = request.query.get("state", "dead")
    if state not in ("dead", "replaying", "delivered", "all"):
        raise BadRequest(400, "state must be dead, replaying, delivered or all", "state")
    journal = request.app[BROKER].journal
    letters = await asyncio.to_thread(journal.dead_letters, request.query.get("subscriber"), None if state == "all" else state)
    return ok({"dead_letters": [
        {"id": d.id, "subscriber": d.subscriber, "seq": d.seq, "attempts": d.attempts, "error": d.error,
         "created_at": d.created_at, "state": d.state} for d in letters]})


async def retry_dead_letter(request: web.Request) -> web.Response:
    return ok({"queued": await queue_retry(request)}, 202)


async def queue_retry(request: web.Request) -> int:
    """Queue the dead letter `{id}` for redelivery (the API and the page's Retry)."""
    dead_id = id_param(request, "dead letter")
    queued = await request.app[BROKER].journal.mark_replay([dead_id], None)
    if not queued:
        raise BadRequest(404, f"no dead letter {dead_id} waiting for a retry", "id")
    return queued


async def healthz(request: web.Request) -> web.Response:
    return ok({"status": "ok", "head": request.app[BROKER].journal.last_seq})


def label(value: str) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped (text format 0.0.4),
    so that a cursor's name (any HELLO can make one) cannot write lines of its own."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def metrics(request: web.Request) -> web.Response:
    status = await asyncio.to_thread(request.app[BROKER].status)
    lines = [
        "# HELP hookbus_journal_head_seq Highest sequence number in the journal.",
        "# TYPE hookbus_journal_head_seq gauge",
        f"hookbus_journal_head_seq {status['head']}",
        "# HELP hookbus_journal_events Events retained in the journal.",
        "# TYPE hookbus_journal_events gauge",
        f"hookbus_journal_events {status['events_retained']}",
    ]
    for name, value in status["counters"].items():
        lines += [f"# TYPE hookbus_events_{name}_total counter", f"hookbus_events_{name}_total {value}"]
    gauges = {"cursor": "Last seq the subscriber finished.", "lag": "Events between the head and the cursor.",
              "retries_in_flight": "Events waiting for a retry.", "dead_letters": "Dead letters not yet replayed."}
    for key, help_text in gauges.items():
        lines += [f"# HELP hookbus_subscriber_{key} {help_text}", f"# TYPE hookbus_subscriber_{key} gauge"]
        lines += [f'hookbus_subscriber_{key}{{subscriber="{label(s["name"])}"}} {s[key]}' for s in status["subscribers"]]
    lines += ["# TYPE hookbus_subscriber_up gauge"]
    lines += [f'hookbus_subscriber_up{{subscriber="{label(s["name"])}"}} {int(s["connected"])}' for s in status["subscribers"]]
    if CHECKS in request.app:
        lines += checks.metric_lines(request.app[CHECKS], label)
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def openapi(request: web.Request) -> web.Response:
    return ok(OPENAPI)
