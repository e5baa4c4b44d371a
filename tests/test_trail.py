"""The delivery trail (issue 16, item 5) through a real `hookbus serve` and a
local receiver: retries then delivered, a permanent refusal dead-lettered with
its reason, a silenced event, no secret in any reason, and all of it still
there after a restart. Then the store's bounds and the TRAIL command's checks."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from hookbus.bus.events.event import new_event
from hookbus.bus.store.base import DEAD, DELIVERED, FAILED, DeliveredRun, Delivery
from hookbus.bus.store.journal import Journal
from hookbus.bus.store.trail import KEEP_LAST
from hookbus.bus.transport import commands, protocol
from hookbus.bus.transport.commands import BadRequest

from .conftest import Site, cloudevent, http_ready, http_request, local_site, wait_for
from .test_process import run_cli

TOKEN = "secret-token-123abc"


class Scripted:
    """A receiver answering by event type: `backup.job.started` 503 twice then 200,
    `backup.job.finished` 400 with a body that echoes the path (and so the token)."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    async def handle(self, request: web.Request) -> web.Response:
        type_ = (await request.json())["type"]
        self.seen[type_] = self.seen.get(type_, 0) + 1
        if type_ == "backup.job.started" and self.seen[type_] <= 2:
            return web.Response(status=503, text="busy")
        if type_ == "backup.job.finished":
            return web.Response(status=400, text=f"no such hook {request.path} ({request.url})")
        return web.Response(status=200, text="ok")


async def post(site: Site, event: dict[str, Any]) -> int:
    status, body = await asyncio.to_thread(http_request, site.http_port, "POST", "/events", orjson.dumps(event),
                                           {"Content-Type": "application/cloudevents+json"})
    assert status == 202, body
    return int(orjson.loads(body)["accepted"][0]["seq"])


def get(site: Site, path: str) -> Any:
    status, body = http_request(site.http_port, "GET", path)
    assert status == 200, (path, status, body)
    return orjson.loads(body)


def trail(site: Site, seq: int) -> list[dict[str, Any]]:
    return list(get(site, f"/api/events/{seq}/deliveries")["deliveries"])


async def serve(site: Site, procs: Any) -> Any:
    proc = procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    return proc


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_retries_dead_letter_silence_and_restart(site: Site, procs: Any, store: str,
                                                      request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("pg_url") if store == "postgres" else "sqlite"
    scripted = Scripted()
    app = web.Application()
    app.router.add_post("/{tail:.*}", scripted.handle)
    async with local_site(app) as base:
        hook = {"name": "ops", "kind": "webhook", "url": f"{base}/hook/{TOKEN}", "events": ["backup.*"],
                "retry": {"attempts": 5, "initial_delay": 0.2, "max_delay": 0.3}}
        site.configure([hook], store=url)
        proc = await serve(site, procs)
        retried = await post(site, cloudevent(1, "j-1", "backup.job.started"))
        refused = await post(site, cloudevent(2, "j-1", "backup.job.finished", outcome="success"))

        def done(seq: int, outcome: str) -> Any:
            entries = trail(site, seq)
            return entries if entries and entries[0]["outcome"] == outcome else None

        (ops,) = await wait_for(lambda: done(retried, DELIVERED), 20, "the retried event delivered on the trail")
        assert ops["subscriber"] == "ops"
        assert [(a["attempt"], a["outcome"], a["status"]) for a in ops["attempts"]] == [
            (1, FAILED, 503), (2, FAILED, 503), (3, DELIVERED, 200)]
        times = [a["at"] for a in ops["attempts"]]
        assert times == sorted(times) and times[-1] - times[0] >= 0.2  # the backoff between them
        assert "503" in ops["attempts"][0]["reason"] and ops["attempts"][2]["reason"] == ""

        (dead,) = await wait_for(lambda: done(refused, DEAD), 20, "the refused event dead on the trail")
        ((attempt),) = dead["attempts"]
        assert (attempt["attempt"], attempt["status"]) == (1, 400)
        assert "answered 400" in attempt["reason"] and "no such hook" in attempt["reason"]

        # The silence: held, and shown as such.
        added = await run_cli("silence", "add", "--type", "backup.log", "--for", "60s", "--config", str(site.config))
        assert added.returncode == 0, added.stderr
        await asyncio.sleep(1.5)  # the runner hears of it with its next heartbeat (0.5 s)
        held = await post(site, cloudevent(3, "j-2", "backup.log"))
        (silenced,) = await wait_for(lambda: done(held, "silenced"), 15, "the silenced event on the trail")
        assert silenced["attempts"][0]["attempt"] == 0 and "silence" in silenced["attempts"][0]["reason"]
        assert "backup.log" not in scripted.seen

        # The job's page data: each of its events with its trail.
        job = await asyncio.to_thread(get, site, "/api/jobs/j-1")
        assert [(e["seq"], e["deliveries"][0]["outcome"]) for e in job["events"]] == [(retried, DELIVERED), (refused, DEAD)]
        # … and the job's page shows it: each attempt, with what the receiver answered.
        status, html = await asyncio.to_thread(http_request, site.http_port, "GET", "/jobs/j-1", None, {"Accept": "text/html"})
        trail_html = html.decode().split('id="delivery-trail"', 1)[1]
        assert status == 200 and trail_html.count("<td>ops</td>") == 4, trail_html  # 503, 503, 200; then the 400
        assert "<td>503</td>" in trail_html and "<td>400</td>" in trail_html and TOKEN not in trail_html

        everything = (await asyncio.to_thread(http_request, site.http_port, "GET", "/api/jobs/j-1"))[1]
        everything += b"".join([(await asyncio.to_thread(http_request, site.http_port, "GET", f"/api/events/{s}/deliveries"))[1]
                                for s in (retried, refused, held)])
        assert TOKEN.encode() not in everything and b"/hook/" not in everything

        assert proc.stop() == 0
        await serve(site, procs)
        assert await asyncio.to_thread(trail, site, retried) == [ops]
        assert await asyncio.to_thread(trail, site, refused) == [dead]
        assert (await asyncio.to_thread(trail, site, held))[0]["outcome"] == "silenced"
        assert http_request(site.http_port, "GET", "/api/events/999999/deliveries")[0] == 404
        assert http_request(site.http_port, "GET", "/api/events/x/deliveries")[0] == 400


async def test_store_caps_each_event_and_prunes_with_events(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    try:
        accepted = await journal.append([(new_event("t", {}, source="test://trail"), b"{}") for _ in range(5)])
        first, second, *rest = (a.seq for a in accepted)
        now = time.time()
        records = [Delivery(first, "ops", n, now + n, FAILED, 503, "busy") for n in range(1, 30)]
        await journal.record_deliveries(records)
        await journal.record_deliveries(records[-3:])  # a TRAIL sent again: nothing twice
        await journal.record_deliveries([Delivery(second, "ops", 1, now, DELIVERED, 200)])
        kept = journal.deliveries([first, second])
        assert [d.attempt for d in kept if d.seq == first] == [1, *range(30 - KEEP_LAST, 30)]
        assert [d.seq for d in kept if d.seq == second] == [second]
        assert journal.recent_deliveries("ops", 1)[0].attempt == 29
        # The bulk as a run: each of its seqs answers as a first attempt delivered.
        await journal.record_deliveries([], [DeliveredRun("mail", rest[0], rest[-1], now, None)])
        assert [(d.seq, d.subscriber, d.attempt, d.outcome) for d in journal.deliveries([second, rest[1]])] == [
            (second, "ops", 1, DELIVERED), (rest[1], "mail", 1, DELIVERED)]
        await journal.set_cursor("ops", rest[-1], 0)
        assert await journal.prune(-1) == 5
        assert journal.deliveries([first, second, *rest]) == []
    finally:
        journal.close()


def test_trail_command_checks_its_records() -> None:
    good = {"name": "ops", "runner": "h pid 1", "records": [[1, 1, 1.5, "delivered", 200, ""]]}
    assert commands.parse(protocol.TRAIL, good)
    bad = [
        {**good, "records": [[1, 1, 1.5, "skipped", 200, ""]]},
        {**good, "records": [["1", 1, 1.5, "delivered", 200, ""]]},
        {**good, "records": [[0, 1, 1.5, "delivered", 200, ""]]},
        {**good, "records": [[1, 1, time.time() + 10 * 86400, "delivered", None, ""]]},
        {**good, "records": [[1, 1, 1.5, "delivered", None]]},
        {**good, "records": [[1, 1, 1.5, "delivered", None, ""]] * (commands.MAX_TRAIL + 1)},
        {k: v for k, v in good.items() if k != "runner"},
        {**good, "name": "../x"},
        {**good, "delivered": [[5, 4, 1.5, 200]]},
        {**good, "delivered": [[1, 4, 1.5, "200"]]},
    ]
    for payload in bad:
        with pytest.raises(BadRequest):
            commands.parse(protocol.TRAIL, payload)
    secret = "Authorization: Bearer abcdefghijklmnopqrstuvwxyz " + "x" * 2000
    (record,) = commands.parse(protocol.TRAIL, {**good, "records": [[1, 1, 1.5, "dead", 401, secret]]}).records  # type: ignore[attr-defined]
    assert "abcdefghijklmnop" not in record[5] and len(record[5]) <= commands.REASON_CHARS
