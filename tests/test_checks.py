"""Checks through a real `hookbus serve`, in real time at small scale (periods and
graces of seconds): missed, running too long, failing, reminders, silences,
pause and resume, the API, metrics and badge, and exactly one announcement per
change across kill -9 and a stop across the due time (DESIGN §10)."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path
from typing import Any

import orjson

from .conftest import Receiver, Site, http_ready, http_request, read_jsonl, toml_value, wait_for
from .test_process import run_cli

KEY = str(uuid.UUID(int=0x5F0A1C2E9A7B4C3D8E1F123456789ABC))
BADGE = "badge-key-for-nightly-0123"


def configure(site: Site, subscribers: list[dict[str, Any]] | None = None, **check: Any) -> Path:
    audit = {"name": "audit", "kind": "jsonl", "path": str(site.root / "var" / "checks.jsonl"),
             "events": ["backup.check.*", "backup.job.anomaly"]}
    site.configure([audit, *(subscribers or [])])
    table = {"name": "nightly", "job": "nightly", "key": KEY, "badge_key": BADGE, "period": 2, "grace": 1, **check}
    text = "\n[[checks]]\n" + "\n".join(f"{k} = {toml_value(v)}" for k, v in table.items()) + "\n"
    site.config.write_text(site.config.read_text() + text)
    return site.config


def announcements(site: Site, type_: str = "backup.check.down") -> list[dict[str, Any]]:
    return [e for e in read_jsonl(site.root / "var" / "checks.jsonl") if e["type"] == type_]


async def ping(site: Site, suffix: str = "") -> None:
    status, body = await asyncio.to_thread(http_request, site.http_port, "GET", f"/ping/{KEY}{suffix}")
    assert status == 200, body


async def serve(site: Site, procs: Any) -> Any:
    proc = procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    return proc


async def settle(seconds: float) -> None:
    """Time for a wrong second announcement to show, after the first has arrived."""
    await asyncio.sleep(seconds)


async def test_missed_then_back_up_once_each(site: Site, procs: Any) -> None:
    configure(site)
    await serve(site, procs)
    await ping(site)
    (down,) = await wait_for(lambda: announcements(site), 15, "backup.check.down")
    assert down["data"]["reason"] == "missed" and down["data"]["check"] == "nightly"
    assert down["data"]["last_outcome"] == "success" and down["data"]["schedule"] == "every 2s"
    await ping(site)
    (up,) = await wait_for(lambda: announcements(site, "backup.check.up"), 15, "backup.check.up")
    assert up["data"]["down_for_s"] > 0
    await settle(0.5)
    assert len(announcements(site)) == 1 and len(announcements(site, "backup.check.up")) == 1


async def test_running_too_long(site: Site, procs: Any) -> None:
    configure(site, period=3600, max_runtime=1.5)
    await serve(site, procs)
    await ping(site, "/start")
    (down,) = await wait_for(lambda: announcements(site), 15, "running_too_long")
    assert down["data"]["reason"] == "running_too_long" and down["data"]["started_at"]


async def test_down_after_three_failures(site: Site, procs: Any) -> None:
    configure(site, period=3600, down_after_failures=3)
    await serve(site, procs)
    for _ in range(2):
        await ping(site, "/fail")
    await settle(1.0)
    assert announcements(site) == []
    await ping(site, "/fail")
    (down,) = await wait_for(lambda: announcements(site), 15, "down after the third failure")
    assert down["data"]["reason"] == "failed" and down["data"]["failures"] == 3


async def test_reminders_while_down(site: Site, procs: Any) -> None:
    configure(site, period=1, grace=0.5, repeat=1)
    await serve(site, procs)
    await ping(site)
    await wait_for(lambda: len(announcements(site)) >= 3, 20, "the announcement and two reminders")
    reminders = [e["data"]["reminder"] for e in announcements(site)]
    assert reminders[:3] == [0, 1, 2]


async def test_a_silence_holds_the_alert_and_its_end_announces_the_still_down_check(
        site: Site, procs: Any, receiver: Receiver) -> None:
    configure(site, [{"name": "ops", "kind": "webhook", "url": receiver.url, "events": ["backup.check.*"]}])
    await serve(site, procs)
    added = await run_cli("silence", "add", "--check", "nightly", "--for", "6s", "--comment", "disk swap",
                          "--config", str(site.config))
    assert added.returncode == 0, added.stderr
    await ping(site)
    await wait_for(lambda: announcements(site), 15, "the down, recorded while silenced")
    await settle(1.0)
    assert receiver.received == []  # held: the webhook kind does not send it
    (held,) = await wait_for(lambda: receiver.received, 15, "the announcement when the silence ends")
    assert held["body"]["data"]["after_silence"] is True and held["body"]["type"] == "backup.check.down"
    status = await run_cli("status", "--json", "--config", str(site.config))
    assert orjson.loads(status.stdout)["subscribers"][1]["stats"]["silenced"] >= 1, status.stdout


async def test_pause_and_resume_from_the_command_line(site: Site, procs: Any) -> None:
    configure(site)
    # A control: the same job, the same period, not paused; its down shows the time has come.
    site.config.write_text(site.config.read_text() + '\n[[checks]]\nname = "control"\njob = "nightly"\nperiod = 2\ngrace = 1\n')
    await serve(site, procs)
    paused = await run_cli("checks", "pause", "nightly", "--config", str(site.config))
    assert paused.returncode == 0 and paused.stdout.strip() == "nightly: paused", paused.stdout + paused.stderr
    await ping(site)
    await wait_for(lambda: [e for e in announcements(site) if e["data"]["check"] == "control"], 15, "the control's down")
    assert [e for e in announcements(site) if e["data"]["check"] == "nightly"] == []  # paused: quiet
    resumed = await run_cli("checks", "resume", "nightly", "--config", str(site.config))
    assert resumed.stdout.strip() == "nightly: up", resumed.stdout + resumed.stderr
    listed = await run_cli("checks", "--config", str(site.config))
    assert "\nnightly" in listed.stdout and "every 2s" in listed.stdout, listed.stdout
    (down,) = await wait_for(lambda: [e for e in announcements(site) if e["data"]["check"] == "nightly"], 15,
                             "down after resume, counted from then")
    assert down["data"]["reason"] == "missed"


async def test_api_metrics_and_badge(site: Site, procs: Any) -> None:
    configure(site)
    await serve(site, procs)
    await ping(site)
    await wait_for(lambda: announcements(site), 15, "backup.check.down")
    status, body = await asyncio.to_thread(http_request, site.http_port, "GET", "/api/checks")
    (check,) = orjson.loads(body)["checks"]
    assert status == 200 and check["status"] == "down" and check["reason"] == "missed"
    status, body = await asyncio.to_thread(http_request, site.http_port, "GET", "/metrics")
    assert b'hookbus_check_up{check="nightly"} 0' in body
    assert b'hookbus_check_last_seen_timestamp_seconds{check="nightly"} ' in body
    status, body = await asyncio.to_thread(http_request, site.http_port, "GET", f"/badge/{BADGE}.svg")
    assert status == 200 and b"<svg" in body and b">down<" in body
    status, _ = await asyncio.to_thread(http_request, site.http_port, "GET", f"/badge/{KEY}.svg")
    assert status == 404  # the ping key opens no badge


async def test_kill_9_at_the_due_time_loses_and_doubles_nothing(site: Site, procs: Any) -> None:
    """Each round: a good run, then hookbus killed with SIGKILL around the moment the
    check falls due (before, at, after), started again. In the end: one down per round, one up per round."""
    configure(site, period=1.5, grace=0.5)
    proc = await serve(site, procs)
    rounds = 6
    for n in range(rounds):
        await ping(site)
        if n:
            await wait_for(lambda n=n: len(announcements(site, "backup.check.up")) >= n, 15, f"up {n}")
        await asyncio.sleep(random.uniform(1.6, 2.4))  # the deadline is 2 s after the ping
        proc.kill9()
        if n % 2:
            await asyncio.sleep(1.0)  # stopped across the due time
        proc.start()
        await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen again")
        await wait_for(lambda n=n: len(announcements(site)) >= n + 1, 15, f"down {n + 1}")
    await ping(site)
    await wait_for(lambda: len(announcements(site, "backup.check.up")) >= rounds, 15, "the last up")
    await settle(1.0)
    downs, ups = announcements(site), announcements(site, "backup.check.up")
    assert len(downs) == rounds and len({e["id"] for e in downs}) == rounds
    assert len(ups) == rounds and len({e["id"] for e in ups}) == rounds


async def test_plain_cloudevents_feed_a_check_by_job_and_repository(site: Site, procs: Any) -> None:
    configure(site, period=3600, repository="MyRepository")
    await serve(site, procs)

    async def post(i: int, repository: str, outcome: str) -> None:
        event = {"specversion": "1.0", "id": f"run-{i}", "source": "test://cron", "type": "backup.job.finished",
                 "data": {"job_id": f"j-{i}", "job": "nightly", "repository": repository, "outcome": outcome,
                          "error": f"Repository /srv/repo-{i} does not exist."}}
        status, body = await asyncio.to_thread(http_request, site.http_port, "POST", "/events", orjson.dumps(event),
                                               {"Content-Type": "application/cloudevents+json"})
        assert status == 202, body

    await post(1, "OtherRepository", "failed")  # another repository's run: not this check's
    await settle(1.0)
    assert announcements(site) == []
    await post(2, "MyRepository", "failed")
    (down,) = await wait_for(lambda: announcements(site), 15, "down after a failed run")
    assert down["data"]["reason"] == "failed" and down["data"]["error"] == "Repository /srv/repo-2 does not exist."
    assert down["data"]["job_id"] == "j-2"  # the other repository's run fed nothing


async def test_a_scheduled_job_gets_its_check_and_hookbus_run_feeds_it(site: Site, procs: Any) -> None:
    """A [[jobs]] table with a period is a check of its name; `hookbus run` reports to it."""
    site.configure([{"name": "audit", "kind": "jsonl", "path": str(site.root / "var" / "checks.jsonl"),
                     "events": ["backup.check.*"]}])
    site.config.write_text(site.config.read_text() + '\n[[jobs]]\nname = "dump"\nrepository = "MyRepository"\n'
                           'backup = "echo disk full >&2; exit 3"\nperiod = "1h"\n')
    await serve(site, procs)
    ran = await run_cli("run", "dump", "--config", str(site.config))
    assert ran.returncode == 1, ran.stdout + ran.stderr
    (down,) = await wait_for(lambda: announcements(site), 15, "the job's check down after its failed run")
    assert (down["data"]["check"], down["data"]["job"], down["data"]["reason"]) == ("dump", "dump", "failed")
    assert down["data"]["repository"] == "MyRepository" and down["data"]["schedule"] == "every 1h"
