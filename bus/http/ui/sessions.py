"""Sessions of the page: a random id in an HttpOnly, SameSite=Strict cookie,
mapped here, in memory, to its CSRF token and expiry. The cookie never holds a
token of the API; a restart of hookbus ends every session (log in again).

Given a request, `session_of` returns its live session or None; `csrf_ok`
says whether an action carries that session's CSRF token (form field `csrf`
or header `X-CSRF-Token`), compared in constant time.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

from aiohttp import web

COOKIE = "hookbus_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
LIFETIME_S = 12 * 3600
MAX_SESSIONS = 10_000  # per pool: memory stays bounded (§13), the oldest go first


@dataclass(slots=True)
class Session:
    id: str
    csrf: str
    expires: float
    anonymous: bool  # made for an open page (no tokens configured), not by a login


class Sessions:
    """Logins and an open page's anonymous sessions, in two pools bounded alike: a flood
    of page views (each may make an anonymous session) never pushes a login out."""

    def __init__(self, lifetime: float = LIFETIME_S) -> None:
        self.lifetime = lifetime
        self.logins: dict[str, Session] = {}
        self.anonymous: dict[str, Session] = {}

    def new(self, anonymous: bool = False) -> Session:
        pool = self.anonymous if anonymous else self.logins
        now = time.time()
        # Oldest first, and all live as long: the expired and the surplus are at the front.
        while pool and (len(pool) >= MAX_SESSIONS or next(iter(pool.values())).expires <= now):
            del pool[next(iter(pool))]
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now + self.lifetime, anonymous)
        pool[session.id] = session
        return session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self.logins.get(sid) or self.anonymous.get(sid)
        if session is None or session.expires <= time.time():
            return None
        return session

    def end(self, sid: str | None) -> None:
        if sid:
            self.logins.pop(sid, None)
            self.anonymous.pop(sid, None)


SESSIONS = web.AppKey("ui_sessions", Sessions)
# The page's actions (routes by their canonical path, registered with them in routes.py): each needs
# a session and its CSRF token, tokens configured or not, so that no other site can make a browser post one.
ACTIONS = web.AppKey("ui_actions", set[str])
OPEN_PATHS = frozenset({"/login"})
OPEN_PREFIXES = ("/static/",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_of(request: web.Request) -> Session | None:
    """The request's live session, or None (no page, no cookie, unknown or expired)."""
    sessions = request.app.get(SESSIONS)
    return sessions.get(request.cookies.get(COOKIE)) if sessions is not None else None


def csrf_ok(session: Session, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(sent.encode(), session.csrf.encode())


async def sent_csrf(request: web.Request) -> str | None:
    """The CSRF token an action carries: the header (htmx, API calls) or the form field."""
    header = request.headers.get(CSRF_HEADER)
    if header is not None:
        return header
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


def set_cookie(response: web.StreamResponse, request: web.Request, session: Session) -> None:
    response.set_cookie(COOKIE, session.id, max_age=int(session.expires - time.time()), path="/", httponly=True,
                        samesite="Strict", secure=request.secure)
