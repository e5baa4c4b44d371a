"""The one middleware every request passes: the body read within its deadline,
the token or signature checked, and every refusal answered as JSON."""

from __future__ import annotations

import asyncio
import hmac
import logging
import sqlite3
from collections.abc import Awaitable, Callable

from aiohttp import web

from hookbus.bus import signing
from hookbus.bus.events.event import EventError, EventTooLarge
from hookbus.bus.http.answers import BadRequest, problem
from hookbus.bus.http.keys import REPLAYS, SETTINGS
from hookbus.bus.http.ui import sessions
from hookbus.bus.settings import HttpSettings
from hookbus.bus.store.base import JournalError

log = logging.getLogger("hookbus.http")

OPEN_PATHS = frozenset({"/healthz", "/openapi.json"})
# healthchecks-style pings cannot carry a token (borgmatic, runitor, Backrest send none):
# the check's key in the path is the credential, as on healthchecks.io.
OPEN_PREFIXES = ("/ping/", "/badge/")
INGEST_ROUTES = frozenset({"/events", "/ingest/{adapter}"})  # all an HMAC secret may post to

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request passes here once (one middleware, not one per concern: each
    is a coroutine layer on every request): read the body within its deadline,
    authenticate, and turn every refusal into a JSON 4xx; an unexpected error is
    logged and answered without internals."""
    try:
        body = await read_body_in_time(request)
        refused = await check_session(request)
        if refused is not None:
            return refused
        verdict = None if by_session(request) else authenticate(request, body)
        if isinstance(verdict, web.Response) and verdict.status == 401 and wants_page(request):
            raise web.HTTPSeeOther("/login")
        if isinstance(verdict, signing.Signed):  # a signed message is handled once (replay.py)
            return await request.app[REPLAYS].once(verdict.msg_id, body, verdict.timestamp, lambda: handler(request))
        if verdict is not None:
            return verdict
        return await handler(request)
    except BadRequest as exc:
        return problem(exc.status, exc.error, exc.field)
    except EventError as exc:  # over max_event_bytes even after cutting (413), or a verdict on a field
        return problem(413 if isinstance(exc, EventTooLarge) else 400, str(exc), exc.field)
    except web.HTTPRequestEntityTooLarge:
        # aiohttp's exception does not keep the limit; the config does.
        limit = request.app[SETTINGS].max_body_bytes
        return problem(413, f"request body is larger than {limit} bytes (http.max_body_bytes)")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = problem(exc.status, exc.reason)
        if "Allow" in exc.headers:  # a 405 says which methods are allowed (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except JournalError as exc:
        response = problem(503, f"not accepted: {exc}; try again")
        response.headers["Retry-After"] = "5"
        return response
    except sqlite3.DatabaseError as exc:  # a damaged journal (disk image malformed): the server's trouble, said so
        log.error("journal error answering %s %s: %s", request.method, request.path, exc)
        return problem(503, f"the journal cannot be read: {exc}")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return problem(500, "internal error; see the server log")


async def read_body_in_time(request: web.Request) -> bytes:
    """Read the whole body first, within a deadline: a client that trickles its
    body must not hold a connection and its memory open indefinitely. aiohttp
    keeps it; handlers read it again at no cost."""
    if not request.body_exists:
        return b""
    if request.content.is_eof():
        return await request.read()  # all of it is here already (the usual small POST): no deadline needed
    limit = request.app[SETTINGS].body_timeout
    try:
        async with asyncio.timeout(limit):
            return await request.read()
    except TimeoutError:
        raise BadRequest(408, f"request body not received within {limit:g}s (http.body_timeout)", "body") from None


async def check_session(request: web.Request) -> web.Response | None:
    """The page's rule (DESIGN §11): an action of the page, or any unsafe request
    that a session cookie authenticates, carries that session's CSRF token; else 403."""
    if "Authorization" in request.headers or request.method in sessions.SAFE_METHODS:
        return None
    session = sessions.session_of(request)
    route = request.match_info.route.resource
    is_action = route is not None and route.canonical in request.app.get(sessions.ACTIONS, ())
    if session is None:
        if is_action:
            return problem(403, "this action of the page needs its session and CSRF token: open the page and try again",
                           "csrf")
        return None
    if not sessions.csrf_ok(session, await sessions.sent_csrf(request)):
        return problem(403, "CSRF token missing or not this session's: reload the page and try again", "csrf")
    return None


def by_session(request: web.Request) -> bool:
    """Whether the request is authenticated by the page's session cookie (a login, or
    an open page's session when no tokens are configured); a bearer token goes first."""
    if "Authorization" in request.headers:
        return False
    if request.path in sessions.OPEN_PATHS or request.path.startswith(sessions.OPEN_PREFIXES):
        return True
    session = sessions.session_of(request)
    settings = request.app[SETTINGS]
    return session is not None and (not session.anonymous or not (settings.tokens or settings.hmac_secrets))


def wants_page(request: web.Request) -> bool:
    """A browser asking for a page (not the API): sent to the login form instead of a JSON 401."""
    return (sessions.SESSIONS in request.app and request.method == "GET" and not request.path.startswith("/api/")
            and "text/html" in request.headers.get("Accept", ""))


def authenticate(request: web.Request, body: bytes) -> web.Response | signing.Signed | None:
    """Return None for an accepted token (or a request that needs none), the
    message for an accepted signature over its body, else a 401 saying why."""
    settings = request.app[SETTINGS]
    if not (settings.tokens or settings.hmac_secrets) or request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
        return None
    reasons = []
    if settings.tokens:
        header = request.headers.get("Authorization", "")
        if not header:
            reasons.append("missing Authorization: Bearer token")
        elif not header.startswith("Bearer "):
            reasons.append("Authorization must be 'Bearer <token>'")
        elif any(hmac.compare_digest(header[7:].strip().encode(), t.encode()) for t in settings.tokens):
            return None
        else:
            reasons.append("bearer token not accepted")
    if settings.hmac_secrets:
        signed = check_signature(request, body, settings)
        if isinstance(signed, signing.Signed):
            return signed
        reasons.append(signed)
    return problem(401, "; ".join(reasons), "Authorization")


def check_signature(request: web.Request, body: bytes, settings: HttpSettings) -> signing.Signed | str:
    """Return the verified message, or why the request's signature is not accepted."""
    if not is_ingest(request):
        # DESIGN §13. Standard Webhooks signs id, timestamp and body, not the method
        # or path: a signature good for POST /events would be as good for the API.
        return "an HMAC signature authorises only POST /events and /ingest/*; this needs a bearer token"
    if "webhook-signature" not in request.headers:
        return "missing webhook-signature"
    headers = request.headers
    try:
        return signing.verify(settings.hmac_secrets, headers.get("webhook-id"), headers.get("webhook-timestamp"),
                              headers.get("webhook-signature"), body, settings.hmac_tolerance)
    except signing.SignatureError as exc:
        return str(exc)


def is_ingest(request: web.Request) -> bool:
    """Whether the request was routed to an ingest endpoint (by its route, not by
    a path prefix that dot segments or encodings could dress up)."""
    route = request.match_info.route.resource
    return request.method == "POST" and route is not None and route.canonical in INGEST_ROUTES
