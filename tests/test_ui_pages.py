"""The operator's page without a browser: the 30-day strip and the status words
as plain functions, and, in-process, the pages as HTML, the session cookie, the
CSRF rule and the security headers (the browser tests are in test_ui.py)."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import pytest

from hookbus.bus.http.ui import sessions, views
from hookbus.bus.settings import Check

from .test_http import Bus, make_bus  # noqa: F401

TOKEN = "page-token-for-tests-0123"


def test_status_is_said_in_words_and_symbols() -> None:
    assert views.status("completed")[:2] == ("✅", "Completed")
    assert views.status("failed")[:2] == ("❌", "Failed")
    assert views.status("skipped")[:2] == ("⏭️", "Skipped")
    assert views.status("pending")[:2] == ("⏸️", "Pending")
    assert views.status("odd_thing")[1] == "Odd thing"


def test_strip_marks_missed_days_only_when_a_check_expected_a_run() -> None:
    jobs = [{"job": "nightly", "outcome": "success", "finished_at": "2026-03-01T02:10:00Z"},
            {"job": "nightly", "outcome": "failed", "finished_at": "2026-03-03T02:10:00Z"},
            {"job": "nightly", "outcome": "warning", "finished_at": "2026-03-03T05:00:00Z"}]
    daily = Check(name="nightly", job="nightly", schedule="0 2 * * *")
    weekly = Check(name="nightly", job="nightly", schedule="0 2 * * 1")  # 2026-03-02 is a Monday
    days = views.day_outcomes(jobs)["nightly"]
    assert days[date(2026, 3, 3)] == "failed"  # the worst of the day
    strip = views.strip(days, [daily], date(2026, 3, 4), date(2026, 3, 1))
    assert [c["state"] for c in strip[-4:]] == ["success", "missed", "failed", "none"]  # today is not over
    assert all(c["state"] == "none" for c in strip[:-4])  # before the first run: no miss
    assert [c["word"] for c in strip[-4:]] == ["Success", "Missed", "Failed", "No run"]
    assert views.strip(days, [weekly], date(2026, 3, 5), date(2026, 3, 1))[-3]["state"] == "failed"
    assert [c["state"] for c in views.strip(days, [], date(2026, 3, 4), date(2026, 3, 1))[-3:]] == ["none", "failed", "none"]


async def test_pages_are_html_and_the_api_stays_json(make_bus: Any) -> None:
    bus: Bus = await make_bus()
    for path in ("/", "/jobs", "/checks", "/events", "/subscribers", "/silences", "/login"):
        resp = await bus.client.get(path, headers={"Accept": "text/html"})
        assert resp.status == 200 and resp.content_type == "text/html", path
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff" and resp.headers["Referrer-Policy"]
    resp = await bus.client.get("/api/jobs", headers={"Accept": "text/html"})
    assert resp.content_type == "application/json"
    assert (await bus.client.get("/static/htmx.min.js")).status == 200


async def test_without_tokens_actions_still_need_the_session_and_its_csrf(make_bus: Any) -> None:
    bus: Bus = await make_bus()
    resp = await bus.client.post("/dead-letters/1/retry", data={"x": "1"})
    assert resp.status == 403 and "CSRF" in (await resp.json())["error"]
    page = await bus.client.get("/subscribers")
    assert page.cookies["hookbus_session"]["httponly"] and page.cookies["hookbus_session"]["samesite"] == "Strict"
    csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text())
    assert csrf is None  # no dead letters: no form; the CSRF token comes with the log-out or action forms
    resp = await bus.client.post("/dead-letters/1/retry", data={"csrf": "forged"})
    assert resp.status == 403 and "CSRF" in (await resp.json())["error"]
    resp = await bus.client.post("/dead-letters/1/retry", headers={"X-CSRF-Token": "forged"})
    assert resp.status == 403


async def test_login_gives_a_session_not_the_token(make_bus: Any) -> None:
    bus: Bus = await make_bus(tokens=[TOKEN])
    resp = await bus.client.get("/jobs", headers={"Accept": "text/html"}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login"
    assert (await bus.client.get("/api/jobs")).status == 401  # the API says 401, in JSON
    login = await bus.client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', await login.text())
    assert csrf is not None
    refused = await bus.client.post("/login", data={"token": "wrong", "csrf": csrf[1]}, allow_redirects=False)
    assert refused.status == 401
    resp = await bus.client.post("/login", data={"token": TOKEN, "csrf": csrf[1]}, allow_redirects=False)
    assert resp.status == 303
    cookie = resp.cookies["hookbus_session"]
    assert TOKEN not in cookie.value and cookie["httponly"] and cookie["path"] == "/"
    page = await bus.client.get("/jobs")
    assert page.status == 200 and page.content_type == "text/html"
    session_csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text())
    assert session_csrf is not None
    assert (await bus.client.get("/api/jobs")).status == 200  # the page's own API calls
    assert (await bus.client.post("/logout")).status == 403
    out = await bus.client.post("/logout", data={"csrf": session_csrf[1]}, allow_redirects=False)
    assert out.status == 303
    assert (await bus.client.get("/api/jobs")).status == 401


async def test_a_job_with_odd_event_data_is_shown_not_a_500(make_bus: Any) -> None:
    """Event data is untrusted (§13): tasks without most fields, odd types, markup in names."""
    bus: Bus = await make_bus()
    odd = {"specversion": "1.0", "id": "odd-1", "source": "test://odd", "type": "backup.job.finished",
           "data": {"job_id": "odd", "job": "<script>x</script>", "outcome": 7, "started_at": "not a time",
                    "duration_s": "long", "counts": {"a": 1},
                    "tasks": [{"name": "only a name"}, {"status": ["x"], "exit_code": {}, "output_tail": 5}]}}
    assert (await bus.client.post("/events", json=odd)).status == 202
    for path in ("/", "/jobs", "/jobs/odd", "/events"):
        resp = await bus.client.get(path)
        text = await resp.text()
        assert resp.status == 200, (path, text)
        assert "<script>x</script>" not in text


async def test_every_post_of_the_page_needs_its_session(make_bus: Any) -> None:
    """Each POST route the page adds, but the login form's, is an action the guard holds to
    a session and its CSRF token: another site cannot make a browser post it."""
    bus: Bus = await make_bus()
    posts = {r.resource.canonical for r in bus.client.app.router.routes()
             if r.method == "POST" and r.resource is not None and not r.resource.canonical.startswith(("/api/", "/ping/"))}
    posts -= {"/events", "/ingest/{adapter}", "/login"}
    assert posts == bus.client.app[sessions.ACTIONS]
    for path in posts:
        url = path.replace("{name}", "nightly").replace("{id}", "1")
        resp = await bus.client.post(url, data={"x": "1"})
        assert resp.status == 403, (url, resp.status)


def test_a_flood_of_anonymous_sessions_never_pushes_a_login_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "MAX_SESSIONS", 50)
    store = sessions.Sessions()
    login = store.new()
    for _ in range(500):
        store.new(anonymous=True)
    assert store.get(login.id) is login and len(store.anonymous) == 50


async def test_with_only_hmac_secrets_the_page_says_why_it_is_closed(make_bus: Any) -> None:
    bus: Bus = await make_bus(hmac_secrets=["whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
    resp = await bus.client.get("/", headers={"Accept": "text/html"}, allow_redirects=True)
    text = await resp.text()
    assert resp.url.path == "/login" and "Add <code>[http] tokens</code>" in text and "the page is open" not in text
