"""The checks over HTTP (DESIGN §10): GET /api/checks, pausing and resuming a
check, the silences, each check's two metrics, and the SVG badge, which its
own read-only key opens (never the ping key)."""

from __future__ import annotations

import hmac
import time
from html import escape
from typing import Any

from aiohttp import web

from hookbus.bus.checks.engine import CheckEngine
from hookbus.bus.checks.state import Status
from hookbus.bus.events.silences import Silence
from hookbus.bus.http.answers import BadRequest, decode_json, id_param, ok
from hookbus.bus.http.keys import CHECKS
from hookbus.bus.settings import parse_duration

MAX_SILENCE_S = 366 * 86400


def engine_of(request: web.Request) -> CheckEngine:
    return request.app[CHECKS]


def check_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if name not in engine_of(request).checks:
        raise BadRequest(404, f"no check named {name!r}", "name")
    return name


async def get_checks(request: web.Request) -> web.Response:
    return ok({"checks": engine_of(request).overview()})


async def pause_check(request: web.Request) -> web.Response:
    name = check_name(request)
    changed = await engine_of(request).pause(name)
    return ok({"check": engine_of(request).describe(name), "changed": changed})


async def resume_check(request: web.Request) -> web.Response:
    name = check_name(request)
    changed = await engine_of(request).resume(name)
    return ok({"check": engine_of(request).describe(name), "changed": changed})


async def get_silences(request: web.Request) -> web.Response:
    now = time.time()
    return ok({"silences": [{**s.to_json(), "active": s.active(now)} for s in engine_of(request).silences.all()]})


def silence_from(body: Any, now: float) -> Silence:
    """A silence from a POST body: `check`, `job` and/or `type`, `for` (seconds or "2h"), `comment`."""
    if not isinstance(body, dict):
        raise BadRequest(400, "body must be a JSON object", "body")
    unknown = sorted(set(body) - {"check", "job", "type", "for", "comment"})
    if unknown:
        raise BadRequest(400, f"{unknown[0]}: unknown key (check, job, type, for, comment)", unknown[0])
    what: dict[str, str | None] = {key: None for key in ("check", "job", "type")}
    for key in what:
        if key in body:
            value = body[key]
            if not isinstance(value, str) or not value or len(value) > 1000:
                raise BadRequest(400, f"{key}: must be a non-empty string of at most 1000 characters", key)
            what[key] = value
    comment = body.get("comment", "")
    if not isinstance(comment, str) or len(comment) > 1000:
        raise BadRequest(400, "comment: must be a string of at most 1000 characters", "comment")
    if not (what["check"] or what["job"] or what["type"]):
        raise BadRequest(400, "say what to silence: check, job or type", "check")
    if "for" not in body:
        raise BadRequest(400, 'for: required, how long, e.g. "2h" or 7200', "for")
    raw = body["for"]
    length = (float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool)
              else parse_duration(raw) if isinstance(raw, str) else None)
    if length is None:
        raise BadRequest(400, 'for: must be a number of seconds or a duration such as "2h" or "1h30m"', "for")
    if not 0 < length <= MAX_SILENCE_S:
        raise BadRequest(400, "for: must be more than 0 and at most 366 days", "for")
    return Silence(0, what["check"], what["job"], what["type"], now, now + length, comment, now)


async def post_silence(request: web.Request) -> web.Response:
    kept = await add_silence(request, decode_json(await request.read()))
    return ok({"silence": kept.to_json()}, 201)


async def add_silence(request: web.Request, body: Any) -> Silence:
    """Keep the silence `body` asks for (the API and the page's form)."""
    engine = engine_of(request)
    silence = silence_from(body, time.time())
    if silence.check is not None and silence.check not in engine.checks:
        raise BadRequest(404, f"check: no check named {silence.check!r}", "check")
    return await engine.add_silence(silence)


async def delete_silence(request: web.Request) -> web.Response:
    return ok({"ended": await end_silence(request)})


async def end_silence(request: web.Request) -> int:
    """End the running silence `{id}` (the API and the page's Expire)."""
    silence_id = id_param(request, "silence")
    if not await engine_of(request).end_silence(silence_id):
        raise BadRequest(404, f"no running silence {silence_id}", "id")
    return silence_id


def metric_lines(engine: CheckEngine, label: Any) -> list[str]:
    names = sorted(engine.checks)
    lines = ["# HELP hookbus_check_up Whether the check is up (1), down (0); paused and new checks are 1.",
             "# TYPE hookbus_check_up gauge"]
    lines += [f'hookbus_check_up{{check="{label(n)}"}} {int(engine.states[n].status is not Status.DOWN)}' for n in names]
    lines += ["# HELP hookbus_check_last_seen_timestamp_seconds When the check's job last reported a run.",
              "# TYPE hookbus_check_last_seen_timestamp_seconds gauge"]
    for name in names:
        seen = engine.states[name].last_seen
        if seen is not None:
            lines.append(f'hookbus_check_last_seen_timestamp_seconds{{check="{label(name)}"}} {seen:.3f}')
    return lines


COLOURS = {"up": "#4c1", "started": "#4c1", "new": "#9f9f9f", "paused": "#9f9f9f", "late": "#dfb317", "down": "#e05d44"}


async def badge(request: web.Request) -> web.Response:
    """An SVG badge of one check's state, for a README or a wiki page."""
    key = request.match_info["key"]
    engine = engine_of(request)
    found = next((c for c in engine.checks.values()
                  if c.badge_key is not None and hmac.compare_digest(c.badge_key.encode(), key.encode())), None)
    if found is None:
        raise BadRequest(404, "no check has this badge key", "key")
    status = engine.states[found.name].status.value
    return web.Response(text=svg(found.name, status), content_type="image/svg+xml",
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


def svg(name: str, status: str) -> str:
    left, right = max(30, 7 * len(name) + 10), max(30, 7 * len(status) + 10)
    width = left + right
    label, value = escape(name), escape(status)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" '
            f'aria-label="{label}: {value}"><title>{label}: {value}</title>'
            f'<rect width="{left}" height="20" fill="#555"/><rect x="{left}" width="{right}" height="20" '
            f'fill="{COLOURS.get(status, "#9f9f9f")}"/><g fill="#fff" text-anchor="middle" '
            f'font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">'
            f'<text x="{left / 2}" y="14">{label}</text><text x="{left + right / 2}" y="14">{value}</text></g></svg>')


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/checks", get_checks)
    app.router.add_post("/api/checks/{name}/pause", pause_check)
    app.router.add_post("/api/checks/{name}/resume", resume_check)
    app.router.add_get("/api/silences", get_silences)
    app.router.add_post("/api/silences", post_silence)
    app.router.add_delete("/api/silences/{id}", delete_silence)
    app.router.add_get("/badge/{key}.svg", badge)
