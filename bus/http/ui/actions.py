"""The page's actions: plain form posts (htmx only enhances them) that do what
the API's own handlers do, then send the browser back to the page (303). The
guard has checked the session and its CSRF token before they run."""

from __future__ import annotations

import time

from aiohttp import web

from hookbus.bus.http import checks as api_checks
from hookbus.bus.http.answers import BadRequest
from hookbus.bus.http.keys import BROKER, CHECKS


def _back(path: str, done: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"{path}?done={done}")


def _int(request: web.Request, name: str) -> int:
    try:
        value = int(request.match_info[name])
    except ValueError:
        raise BadRequest(400, f"{name} must be an integer", name) from None
    if not 0 < value < 2**63:
        raise BadRequest(404, f"no such {name}", name)
    return value


async def pause(request: web.Request) -> web.Response:
    engine = request.app[CHECKS]
    name = request.match_info["name"]
    if name not in engine.checks:
        raise BadRequest(404, f"no check named {name!r}", "name")
    raise _back("/checks", "paused" if await engine.pause(name) else "unchanged")


async def resume(request: web.Request) -> web.Response:
    engine = request.app[CHECKS]
    name = request.match_info["name"]
    if name not in engine.checks:
        raise BadRequest(404, f"no check named {name!r}", "name")
    raise _back("/checks", "resumed" if await engine.resume(name) else "unchanged")


async def retry(request: web.Request) -> web.Response:
    dead_id = _int(request, "id")
    if not await request.app[BROKER].journal.mark_replay([dead_id], None):
        raise BadRequest(404, f"no dead letter {dead_id} waiting for a retry", "id")
    raise _back("/subscribers", "retried")


async def add_silence(request: web.Request) -> web.Response:
    form = await request.post()
    body = {k: v for k, v in form.items() if k in ("check", "job", "type", "for", "comment") and isinstance(v, str) and v}
    silence = api_checks.silence_from(body, time.time())
    engine = request.app[CHECKS]
    if silence.check is not None and silence.check not in engine.checks:
        raise BadRequest(404, f"check: no check named {silence.check!r}", "check")
    await engine.add_silence(silence)
    raise _back("/silences", "added")


async def expire_silence(request: web.Request) -> web.Response:
    silence_id = _int(request, "id")
    if not await request.app[CHECKS].end_silence(silence_id):
        raise BadRequest(404, f"no running silence {silence_id}", "id")
    raise _back("/silences", "expired")
