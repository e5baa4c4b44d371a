"""Notifications against real local stand-ins (Slack webhooks, Healthchecks, an
Apprise json:// target), in-process and through real `hookbus serve` processes."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from hookbus.bus.delivery.subscriber import DeliveryError
from hookbus.bus.events.event import Event
from hookbus.config import build_config
from hookbus.subscribers.apprise import AppriseSubscriber
from hookbus.subscribers.healthchecks import HealthchecksSubscriber, run_id

from .conftest import Site, http_ready, wait_for
from .standins import StandIn, always, first_then_ok, ok, standin  # noqa: F401 - standin is a fixture
from .test_notify_units import OUTCOMES, finished
from .test_process import run_cli

UUID = "5f0a1c2e-9a7b-4c3d-8e1f-123456789abc"


def now(offset: float = 0.0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset))


def event(type_: str, data: Any, n: int = 1, when: str | None = None, subject: str | None = "MyRepository") -> Event:
    return Event(id=f"ev-{type_}-{n}", source="borgitory://host1", type=type_, time=when or now(), subject=subject,
                 data=data, seq=n)


def cloud(type_: str, data: Any, id_: str, subject: str | None = "MyRepository") -> dict[str, Any]:
    body = {"specversion": "1.0", "id": id_, "source": "borgitory://host1", "type": type_, "data": data}
    if subject:
        body["subject"] = subject
    return body


async def post(url: str, events: list[dict[str, Any]], token: str | None = None) -> None:
    headers = {"Content-Type": "application/cloudevents-batch+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as s, s.post(url + "/events", data=orjson.dumps(events), headers=headers) as r:
        assert r.status == 202, await r.text()


async def subscribers(url: str, token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.get(url + "/api/subscribers", headers=headers) as r:
        body = await r.json()
    return {sub["name"]: sub for sub in body["subscribers"]}


# -- healthchecks against a stand-in ------------------------------------------------------------------

def healthchecks(base: str, **over: Any) -> HealthchecksSubscriber:
    table = {"name": "hc", "kind": "healthchecks", "url": f"{base}/ping/{UUID}", **over}
    return HealthchecksSubscriber(build_config({"subscribers": [table]}, "t").subscribers[0])


async def test_healthchecks_pings_start_success_fail_log_with_one_rid(standin: StandIn) -> None:
    standin.on("/ping/", ok("OK"))
    standin.headers["Ping-Body-Limit"] = "1000"
    sub = healthchecks(standin.url, checks={"weekly": f"{standin.url}/ping/pingkey1234/weekly-backup"})
    await sub.start()
    try:
        started = {"job_id": "job-abc-123", "job": "nightly", "repository": "MyRepository"}
        await sub.handle(event("backup.job.started", started, 1))
        long_tail = "".join(f"borg: chunk {i}\n" for i in range(5000)) + "borg: the very end"
        await sub.handle(event("backup.job.finished", finished(
            "failed", "backup_error", {"completed": 5, "failed": 1, "skipped": 1, "total": 7},
            tasks=[{"name": "backup", "kind": "backup", "status": "failed", "output_tail": long_tail}]), 2))
        await sub.handle(event("backup.job.finished", finished("success", None, None), 3))
        await sub.handle(event("backup.job.finished", finished("failed", None, None, exit_status=3), 4))
        await sub.handle(event("backup.log", {"job_id": "job-abc-123", "message": "1.2 GiB deduplicated"}, 5))
        await sub.handle(event("backup.job.finished", {**finished("success", None, None), "job": "weekly"}, 6))
        # A success two hours late is not sent (it would claim a backup ran now); a late failure is.
        await sub.handle(event("backup.job.finished", finished("success", None, None), 7, when=now(-7200)))
        await sub.handle(event("backup.job.finished", finished("failed", None, None), 8, when=now(-7200)))
    finally:
        await sub.close()
    hits = standin.hits
    assert [(h.method, h.path) for h in hits] == [
        ("POST", f"/ping/{UUID}/start"), ("POST", f"/ping/{UUID}/fail"), ("POST", f"/ping/{UUID}"),
        ("POST", f"/ping/{UUID}/3"), ("POST", f"/ping/{UUID}/log"), ("POST", "/ping/pingkey1234/weekly-backup"),
        ("POST", f"/ping/{UUID}/fail")]
    rid = run_id("job-abc-123")
    assert {h.query.get("rid") for h in hits} == {rid}
    assert hits[5].query.get("create") == "1" and "create" not in hits[0].query
    fail_body = hits[1].body.decode()
    assert len(hits[1].body) <= 1000  # learnt from the start ping's Ping-Body-Limit
    assert fail_body.startswith("❌ Backup Job Failed - Backup Error\n\nBackup job for 'MyRepository' failed during")
    assert fail_body.endswith("borg: the very end") and "bytes before this" in fail_body
    assert hits[4].body.decode().endswith("1.2 GiB deduplicated")
    assert all(h.headers["User-Agent"].startswith("hookbus/") for h in hits)


@pytest.mark.parametrize(("warning_as", "suffix"), [("success", ""), ("fail", "/fail"), ("log", "/log")])
async def test_healthchecks_warning_as(standin: StandIn, warning_as: str, suffix: str) -> None:
    standin.on("/ping/", ok("OK"))
    sub = healthchecks(standin.url, warning_as=warning_as)
    await sub.start()
    try:
        await sub.handle(event("backup.job.finished", OUTCOMES["warning"][0]))
    finally:
        await sub.close()
    assert [h.path for h in standin.hits] == [f"/ping/{UUID}{suffix}"]
    assert standin.hits[0].body.decode().startswith("⚠️ Backup Job Completed with Warnings")


async def test_healthchecks_unknown_check_is_permanent(standin: StandIn) -> None:
    standin.on("/ping/", always(404, "not found"))
    sub = healthchecks(standin.url)
    await sub.start()
    try:
        with pytest.raises(DeliveryError) as caught:
            await sub.handle(event("backup.job.started", {"job_id": "j"}))
    finally:
        await sub.close()
    assert caught.value.permanent and "404" in str(caught.value) and UUID not in str(caught.value)


# -- Apprise against a json:// stand-in -----------------------------------------------------------------

def apprise_sub(*urls: str, **over: Any) -> AppriseSubscriber:
    table = {"name": "ap", "kind": "apprise", "urls": list(urls), **over}
    return AppriseSubscriber(build_config({"subscribers": [table]}, "t").subscribers[0])


def json_url(standin: StandIn, path: str) -> str:
    return standin.url.replace("http://", "json://") + path


@pytest.mark.parametrize("name", list(OUTCOMES))
async def test_apprise_gets_the_documented_text_as_title_and_body(standin: StandIn, name: str) -> None:
    standin.on("/apprise", ok())
    sub = apprise_sub(json_url(standin, "/apprise/team"))
    await sub.start()
    data, expected = OUTCOMES[name]
    try:
        await sub.handle(event("backup.job.finished", data))
    finally:
        await sub.close()
    (hit,) = standin.hits
    sent = hit.json()
    assert sent["title"] + "\n\n" + sent["message"] == expected
    assert sent["type"] == {"success": "success", "warning": "warning"}.get(data["outcome"], "failure")


async def test_apprise_delivers_retries_and_reports_each_url_on_its_own(standin: StandIn) -> None:
    standin.on("/good", ok())
    broken = {"fail": True}
    standin.on("/flaky", lambda hit, n: (503, "down", {}) if broken["fail"] else (200, "ok", {}))
    sub = apprise_sub(json_url(standin, "/good"), json_url(standin, "/flaky/secret-token-123"))
    await sub.start()
    try:
        job = event("backup.job.finished", OUTCOMES["critical_hook"][0])
        with pytest.raises(DeliveryError) as caught:
            await sub.handle(job)
        assert "1 of 2 Apprise target(s) failed: urls[1] (JSON)" in str(caught.value)
        assert "secret-token-123" not in str(caught.value) and not caught.value.permanent
        broken["fail"] = False
        await sub.handle(job)  # the retry goes only to the target that failed
    finally:
        await sub.close()
    assert len(standin.to("/good")) == 1
    assert [h.status for h in standin.to("/flaky")] == [503, 200]


async def test_apprise_cuts_long_output_to_the_services_limit_keeping_the_end(standin: StandIn) -> None:
    standin.on("/apprise", ok())
    sub = apprise_sub(json_url(standin, "/apprise"), events=["backup.task.finished"])
    await sub.start()
    tail = "".join(f"borg: file {i}\n" for i in range(20_000)) + "borg: terminating with error status"
    task = {"index": 2, "name": "backup", "kind": "backup", "phase": "main", "status": "failed", "exit_code": 2,
            "output_tail": tail}
    try:
        await sub.handle(event("backup.task.finished", {"job_id": "job-abc-123", "task": task}))
    finally:
        await sub.close()
    sent = standin.hits[0].json()
    limit = sub.services[0][1].body_maxlen
    assert len(sent["message"]) <= limit < len(tail)
    assert sent["message"].endswith("borg: terminating with error status")
    assert "characters before this" in sent["message"] and sent["title"] == "❌ Task backup (backup): failed"


async def test_apprise_config_file_and_tags(standin: StandIn, tmp_path: Path) -> None:
    standin.on("/", ok())
    config = tmp_path / "apprise.yml"
    config.write_text(f"""urls:
  - {json_url(standin, '/ops')}:
      tag: ops
  - {json_url(standin, '/dev')}:
      tag: dev
""")
    sub = apprise_sub(config=str(config), tags=["ops"], urls=[])
    await sub.start()
    try:
        await sub.handle(event("backup.job.finished", OUTCOMES["success"][0]))
    finally:
        await sub.close()
    assert [h.path for h in standin.hits] == ["/ops"]


# -- through `hookbus serve` -------------------------------------------------------------------------------

async def test_slack_apprise_healthchecks_through_serve(site: Site, procs: Any, standin: StandIn) -> None:
    """The four outcomes, byte for byte on Slack and Apprise; one Slack message per second
    per webhook; a 429 waits for its Retry-After; healthchecks start and success share a rid."""
    ops = standin.on("/services/T000/B000/opsSECRET", ok())
    limited = standin.on("/services/T000/B000/limitedSECRET", first_then_ok(429, "rate_limited", {"Retry-After": "2"}))
    standin.on("/ping/", ok("OK"))
    standin.on("/apprise", ok())
    site.configure([
        {"name": "ops", "kind": "slack", "events": ["backup.job.finished"], "webhook_url": ops},
        {"name": "limited", "kind": "slack", "events": ["backup.job.finished"], "when": {"outcome": ["success"]},
         "webhook_url": limited},
        {"name": "ap", "kind": "apprise", "events": ["backup.job.finished"], "urls": [json_url(standin, "/apprise")]},
        {"name": "hc", "kind": "healthchecks", "url": f"{standin.url}/ping/{UUID}"},
    ])
    procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    events = [cloud("backup.job.started", {"job_id": "job-abc-123", "job": "nightly"}, "start")]
    events += [cloud("backup.job.finished", data, f"finished-{name}") for name, (data, _) in OUTCOMES.items()]
    await post(site.url, events)
    await wait_for(lambda: len(standin.to("/services/T000/B000/opsSECRET")) >= 4 and len(standin.to("/apprise")) >= 4
                   and len(standin.to("/services/T000/B000/limitedSECRET", ok_only=True)) >= 1
                   and len(standin.to("/ping/")) >= 5, 30, "every message")
    expected = [text for _, text in OUTCOMES.values()]
    slack_hits = standin.to("/services/T000/B000/opsSECRET")
    assert [h.json()["text"] for h in slack_hits] == expected  # one job: its events in order
    gaps = [b.at - a.at for a, b in itertools.pairwise(slack_hits)]
    assert min(gaps) >= 0.95, gaps  # at most one message per second per webhook
    assert [h.json()["title"] + "\n\n" + h.json()["message"] for h in standin.to("/apprise")] == expected
    first, second = standin.to("/services/T000/B000/limitedSECRET")
    assert (first.status, second.status) == (429, 200) and second.at - first.at >= 2.0
    pings = standin.to("/ping/")
    assert [h.path.removeprefix(f"/ping/{UUID}") for h in pings] == ["/start", "", "/fail", "/fail", "/fail"]
    assert {h.query["rid"] for h in pings} == {run_id("job-abc-123")}

    # `hookbus test NAME`: renders a sample, shows it, sends it.
    result = await run_cli("test", "ops", "--config", str(site.config))
    assert result.returncode == 0, result.stderr
    assert "✅ Backup Job Completed Successfully\n\nBackup job for 'MyRepository' completed successfully." in result.stdout
    assert "sent to ops" in result.stdout and "opsSECRET" not in result.stdout + result.stderr
    assert len(standin.to("/services/T000/B000/opsSECRET")) == 5


async def test_a_2000_device_burst_gives_at_most_3_slack_messages(site: Site, procs: Any, standin: StandIn) -> None:
    ops = standin.on("/services/T000/B000/burstSECRET", ok())
    site.configure([{"name": "ops", "kind": "slack", "events": ["backup.device.*", "backup.report"],
                     "webhook_url": ops, "group_wait": 1.0, "group_interval": 3.0}])
    procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    devices = [cloud("backup.device.failed" if i % 100 == 7 else "backup.device.succeeded",
                     {"job_id": "run-42", "device": {"host": f"sw{i:04d}", "os_name": "eos"},
                      "error": "timeout connecting" if i % 100 == 7 else None}, f"dev-{i}", subject=None)
               for i in range(2000)]
    started = time.monotonic()
    for i in range(0, 2000, 250):
        await post(site.url, devices[i:i + 250])
    failures = [{"host": f"sw{i:04d}", "error": "timeout connecting"} for i in range(2000) if i % 100 == 7]
    report = {"job_id": "run-42", "total": 2000, "ok": 1980, "fail": 20, "start": now(-60), "stop": now(),
              "duration_s": 60.0, "failures": failures}
    await post(site.url, [cloud("backup.report", report, "report-42", subject=None)])

    def report_sent() -> bool:
        hits = standin.to("/services/T000/B000/burstSECRET")
        return bool(hits) and hits[-1].json()["text"].startswith("❌ netcfgbu backup: 20 of 2000")

    await wait_for(report_sent, 60, "the report")
    subs = await wait_for(lambda: _caught_up(site.url), 20, "the cursor past every event")
    elapsed = time.monotonic() - started
    hits = standin.to("/services/T000/B000/burstSECRET")
    assert len(hits) <= 3, [h.json()["text"].split("\n")[0] for h in hits]
    digests = [h.json()["text"] for h in hits[:-1]]
    counted = sum(int(re.search(r"(\d+) devices", text).group(1)) for text in digests)  # type: ignore[union-attr]
    assert counted == 2000, digests
    assert sum(int(re.search(r"(\d+) failed", text.split("\n")[0]).group(1)) for text in digests) == 20  # type: ignore[union-attr]
    assert "First failures:\n  sw0007: timeout connecting" in digests[0]
    assert "Summary: TOTAL=2000, OK=1980, FAIL=20" in hits[-1].json()["text"]
    assert subs["ops"]["lag"] == 0
    print(f"2000-device burst + report: {len(hits)} Slack messages, all sent {elapsed:.1f}s after the first POST")


async def _caught_up(url: str) -> dict[str, Any] | None:
    subs = await subscribers(url)
    return subs if subs["ops"]["lag"] == 0 else None


async def test_held_digest_is_sent_after_sigkill(site: Site, procs: Any, standin: StandIn) -> None:
    """Device events taken into a digest that was not sent yet are not lost when
    hookbus is killed: the cursor stayed below them, so they come again."""
    ops = standin.on("/services/T000/B000/crashSECRET", ok())
    table = {"name": "ops", "kind": "slack", "events": ["backup.device.*"], "webhook_url": ops,
             "group_wait": 3600.0, "group_interval": 3600.0}
    site.configure([table])
    serve = procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    await post(site.url, [cloud("backup.device.succeeded", {"job_id": "run-7", "device": {"host": f"sw{i}"}},
                                f"d{i}", subject=None) for i in range(50)])

    async def all_taken() -> bool:
        sub = (await subscribers(site.url))["ops"]
        return sub["stats"].get("delivered", 0) >= 50

    await wait_for(all_taken, 20, "the digest to take all 50 device events")
    await asyncio.sleep(0.6)  # a few cursor saves (every 0.2 s): the cursor must still be held back
    held = (await subscribers(site.url))["ops"]
    assert held["cursor"] == 0 and held["lag"] == 50 and not standin.hits
    serve.kill9()

    site.configure([{**table, "group_wait": 0.5}])
    procs("serve", "--config", str(site.config))
    await wait_for(lambda: standin.hits, 30, "the digest after the restart")
    await wait_for(lambda: _caught_up(site.url), 20, "the cursor past the digest")
    (hit,) = standin.hits
    assert hit.json()["text"].startswith("✅ netcfgbu backup run-7: 50 devices, 0 failed")


async def test_alerting_on_alerting_and_no_secret_anywhere(site: Site, procs: Any, standin: StandIn,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A Slack webhook whose channel is archived dead-letters the message and the
    fallback subscriber is told. Every log line of the run, every CLI output, the
    HTTP API and the alerts themselves are searched for the secrets."""
    token = "tok-3f9a8b7c6d5e4f30"
    secrets = {"slack path": "archivedHOOKSECRET42", "apprise password": "pa55-w0rd-77",
               "apprise path": "alerts-path-secret-99", "healthchecks uuid": UUID, "token": token}
    archived = standin.on("/services/T000/B000/archivedHOOKSECRET42", always(410, "channel_is_archived"))
    standin.on("/alerts-path-secret-99", ok())
    standin.on("/ping/", always(503, "maintenance"))
    fallback = standin.url.replace("http://", "json://user:pa55-w0rd-77@") + "/alerts-path-secret-99"
    site.configure([
        {"name": "ops", "kind": "slack", "events": ["backup.job.finished"], "webhook_url": "env:SLACK_WEBHOOK_URL",
         "retry": {"attempts": 2, "initial_delay": 0.1, "max_delay": 0.2}},
        {"name": "hc", "kind": "healthchecks", "url": "env:HC_PING_URL",
         "retry": {"attempts": 2, "initial_delay": 0.1, "max_delay": 0.2}},
        {"name": "alerts", "kind": "apprise", "events": ["hookbus.delivery.failed"], "urls": ["env:ALERT_URL"],
         "group_wait": 0.5},
    ])
    config_text = site.config.read_text().replace("[http]\n", '[http]\ntokens = ["env:HOOKBUS_TOKEN"]\n')
    site.config.write_text(config_text)
    env = {"SLACK_WEBHOOK_URL": archived, "HC_PING_URL": f"{standin.url}/ping/{UUID}", "ALERT_URL": fallback,
           "HOOKBUS_TOKEN": token}
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # for the processes started below
    serve = procs("serve", "--config", str(site.config), "--log-level", "DEBUG")
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    data, _ = OUTCOMES["critical_hook"]
    await post(site.url, [cloud("backup.job.finished", data, "crit-1")], token=token)
    await wait_for(lambda: len(standin.to("/alerts-path-secret-99")) >= 1
                   and "hc" in " ".join(h.body.decode() for h in standin.to("/alerts-path-secret-99"))
                   and "ops" in " ".join(h.body.decode() for h in standin.to("/alerts-path-secret-99")),
                   60, "the fallback to be told about both failures")
    alerts = standin.to("/alerts-path-secret-99")
    told = " ".join(h.json()["title"] + "\n" + h.json()["message"] for h in alerts)
    assert "channel_is_archived" in told and "archived" in told and "🚨" in told

    outputs = []
    for args in (["status"], ["status", "--json"], ["test", "ops"], ["test", "hc"], ["test", "alerts"],
                 ["check-config"], ["replay", "--dead-letters"]):
        result = await run_cli(*args, "--config", str(site.config), env=env)
        outputs.append((args, result))
    by_cmd = {" ".join(a): r for a, r in outputs}
    assert by_cmd["test ops"].returncode == 1 and "channel_is_archived" in by_cmd["test ops"].stderr
    assert by_cmd["test alerts"].returncode == 0
    assert by_cmd["status"].returncode == 0 and "ops" in by_cmd["status"].stdout
    headers = {"Authorization": f"Bearer {token}"}
    api = []
    async with aiohttp.ClientSession() as s:
        for path in ("/api/subscribers", "/api/dead-letters", "/api/events?limit=100", "/metrics"):
            async with s.get(site.url + path, headers=headers) as r:
                api.append(await r.text())
    serve.stop()
    everything = "\n".join([serve.output(), *(r.stdout + r.stderr for _, r in outputs), *api,
                            *(h.body.decode() for h in standin.to("/alerts-path-secret-99"))])
    assert "DEBUG" in serve.output() and "dead-lettered" in serve.output()
    for what, secret in secrets.items():
        assert secret not in everything, f"the {what} leaked"


async def test_check_config_points_at_a_bad_template_and_serve_refuses_it(site: Site, tmp_path: Path) -> None:
    site.configure([{"name": "audit", "kind": "jsonl", "path": str(tmp_path / "a.jsonl")}])
    site.config.write_text(site.config.read_text() + """
[[subscribers]]
name = "ops"
kind = "slack"
webhook_url = "https://hooks.slack.com/services/T0/B0/secretXYZ123"
template = { "backup.job.*" = "{{ data.repository }} {{ data.outcom }}" }
""")
    for command in ("check-config", "serve"):
        result = await run_cli(command, "--config", str(site.config))
        assert result.returncode == 2, result.stderr
        assert ("subscribers[1] (ops).template.backup.job.*: 'dict object' has no attribute 'outcom' "
                "(rendering a sample backup.job.finished event)") in result.stderr
        assert "Traceback" not in result.stderr and "secretXYZ123" not in result.stderr


async def test_hookbus_test_for_healthchecks_and_a_digest(site: Site, standin: StandIn) -> None:
    standin.on("/ping/", ok("OK"))
    standin.on("/services/", ok())
    site.configure([
        {"name": "hc", "kind": "healthchecks", "checks": {"weekly": f"{standin.url}/ping/pingkey1234/weekly-backup"}},
        {"name": "netops", "kind": "slack", "events": ["backup.device.failed", "backup.report"],
         "webhook_url": f"{standin.url}/services/T0/B0/netopsSECRET1"},
    ])
    result = await run_cli("test", "hc", "--config", str(site.config))
    assert result.returncode == 0, result.stderr
    (ping,) = standin.to("/ping/")
    assert ping.path == "/ping/pingkey1234/weekly-backup" and ping.query["create"] == "1"  # the first configured job
    assert "pingkey1234" not in result.stdout and "POST http://127.0.0.1" in result.stdout
    nothing = await run_cli("test", "hc", "--type", "backup.vcs.saved", "--config", str(site.config))
    assert nothing.returncode == 1 and "nothing to send: backup.vcs.saved is not pinged" in nothing.stderr
    digest = await run_cli("test", "netops", "--config", str(site.config))  # backup.device.failed: a digest type
    assert digest.returncode == 0, digest.stderr
    assert "❌ Device backup failed: switch2" in digest.stdout
    (sent,) = standin.to("/services/")
    assert sent.json()["text"].startswith("❌ Device backup failed: switch2")
