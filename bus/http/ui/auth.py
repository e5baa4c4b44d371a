"""Logging in to the page (DESIGN §11): a token of `[http] tokens`, posted once
to /login, gives a session cookie (HttpOnly, SameSite=Strict, Path=/) holding a
random session id; the token is neither kept in the cookie nor ever put in a URL.
POST /logout ends the session."""

from __future__ import annotations

import hmac

from aiohttp import web

from hookbus.bus.http.keys import SETTINGS
from hookbus.bus.http.ui import sessions
from hookbus.bus.http.ui.render import page


async def login_form(request: web.Request) -> web.Response:
    return page(request, "login.html", error=None)


async def login(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    form = await request.post()
    token = form.get("token")
    if not settings.tokens:
        raise web.HTTPSeeOther("/")
    if not isinstance(token, str) or not any(hmac.compare_digest(token.encode(), t.encode()) for t in settings.tokens):
        response = page(request, "login.html", error="That token is not accepted.")
        response.set_status(401)
        return response
    store = request.app[sessions.SESSIONS]
    store.end(request.cookies.get(sessions.COOKIE))  # a new id at login: no session fixation
    session = store.new()
    response = web.HTTPSeeOther("/")
    sessions.set_cookie(response, request, session)
    raise response


async def logout(request: web.Request) -> web.Response:
    request.app[sessions.SESSIONS].end(request.cookies.get(sessions.COOKIE))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(sessions.COOKIE, path="/")
    raise response
