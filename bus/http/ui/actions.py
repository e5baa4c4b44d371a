"""The page's actions: plain form posts (htmx only enhances them) that do what
the API's own handlers do, then send the browser back to the page (303). The
guard has checked the session and its CSRF token before they run."""

from __future__ import annotations

from aiohttp import web

from hookbus.bus.http import api
from hookbus.bus.http import checks as api_checks
from hookbus.bus.http.keys import CHECKS


def _back(path: str, done: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"{path}?done={done}")


async def pause(request: web.Request) -> web.Response:
    name = api_checks.check_name(request)
    raise _back("/checks", "paused" if await request.app[CHECKS].pause(name) else "unchanged")


async def resume(request: web.Request) -> web.Response:
    name = api_checks.check_name(request)
    raise _back("/checks", "resumed" if await request.app[CHECKS].resume(name) else "unchanged")


async def retry(request: web.Request) -> web.Response:
    await api.queue_retry(request)
    raise _back("/subscribers", "retried")


async def add_silence(request: web.Request) -> web.Response:
    form = await request.post()
    body = {k: v for k, v in form.items() if k in ("check", "job", "type", "for", "comment") and isinstance(v, str) and v}
    await api_checks.add_silence(request, body)
    raise _back("/silences", "added")


async def expire_silence(request: web.Request) -> web.Response:
    await api_checks.end_silence(request)
    raise _back("/silences", "expired")
