"""Rendering a page: the templates shipped beside this module (autoescaped), the
filters they share, the session a page belongs to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup, escape

from hookbus.bus.http.keys import SETTINGS
from hookbus.bus.http.ui import sessions, views

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"


def status_html(value: Any) -> Markup:
    symbol, word, css = views.status(value)
    return Markup('<span class="status {}"><span aria-hidden="true">{}</span> {}</span>').format(css, symbol, word)


def time_html(value: Any) -> Markup:
    """A time as UTC text in a <time> (static/page.js says it in the browser's zone, UTC on hover)."""
    moment = views.utc(value)
    if moment is None:
        return Markup("—")
    iso = moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    return Markup('<time datetime="{}">{}</time>').format(iso, moment.strftime("%Y-%m-%d %H:%M:%S UTC"))


# Event data is untrusted and may lack any field (§13): a missing one renders as nothing, never a 500.
ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.ChainableUndefined,
                         trim_blocks=True, lstrip_blocks=True)
ENV.filters.update(status=status_html, time=time_html, duration=views.duration, tail_lines=views.tail_lines)


def page(request: web.Request, template: str, **context: Any) -> web.Response:
    """Render a page with its session's CSRF token; an open page (no tokens configured)
    makes itself a session at the first visit, so that its actions carry a token too."""
    session = sessions.session_of(request)
    fresh = None
    if session is None:
        fresh = session = request.app[sessions.SESSIONS].new(anonymous=True)
    settings = request.app[SETTINGS]
    html = ENV.get_template(template).render(
        csrf=session.csrf, logged_in=not session.anonymous, login_needed=bool(settings.tokens),
        signed_only=bool(settings.hmac_secrets and not settings.tokens), path=request.path, **context)
    response = web.Response(text=html, content_type="text/html", charset="utf-8")
    if fresh is not None:
        sessions.set_cookie(response, request, fresh)
    return response


def fragment(template: str, **context: Any) -> str:
    return ENV.get_template(template).render(**context)


__all__ = ["ENV", "STATIC", "escape", "fragment", "page"]
