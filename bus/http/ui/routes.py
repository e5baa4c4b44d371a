"""The page's routes, added to the HTTP application when `[http] ui = true`, and
the security headers every answer carries (a CSP forbids inline script)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from hookbus.bus.http.history import HISTORY
from hookbus.bus.http.ui import actions, auth, live, pages, sessions
from hookbus.bus.http.ui.render import STATIC

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


async def warm_history(app: web.Application) -> AsyncIterator[None]:
    """Read the job history from the journal at start, not at the first visit of a page."""
    task = asyncio.create_task(app[HISTORY].refresh(), name="ui-history")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def add_routes(app: web.Application) -> None:
    """GET /, /jobs, /jobs/{job_id}, /checks, /events, /events/stream, /subscribers, /silences, /login;
    POST the actions (sessions.ACTIONS) and /login; /static/ the vendored htmx, CSS and JS."""
    app[sessions.SESSIONS] = sessions.Sessions()
    app[sessions.ACTIONS] = set()

    def action(path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        """A POST of the page: the guard asks it for a session and its CSRF token (sessions.ACTIONS)."""
        app.router.add_post(path, handler)
        app[sessions.ACTIONS].add(path)

    live.attach(app)  # the newest events, for /events/stream
    app.on_response_prepare.append(security_headers)
    app.cleanup_ctx.append(warm_history)
    app.router.add_get("/", pages.overview)
    app.router.add_get("/jobs", pages.jobs)
    app.router.add_get("/jobs/{job_id}", pages.job)
    app.router.add_get("/checks", pages.checks)
    action("/checks/{name}/pause", actions.pause)
    action("/checks/{name}/resume", actions.resume)
    app.router.add_get("/events", pages.events)
    app.router.add_get("/events/stream", live.stream)
    app.router.add_get("/subscribers", pages.subscribers)
    action("/dead-letters/{id}/retry", actions.retry)
    app.router.add_get("/silences", pages.silences)
    action("/silences", actions.add_silence)
    action("/silences/{id}/expire", actions.expire_silence)
    app.router.add_get("/login", auth.login_form)
    app.router.add_post("/login", auth.login)
    action("/logout", auth.logout)
    app.router.add_static("/static/", STATIC, append_version=False)
