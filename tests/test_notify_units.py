"""Unit tests of notifications: the documented texts, fitting into each target's
limits, each client's handling of answers (aioresponses), digests, config checks."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aioresponses import aioresponses
from apprise.plugins.custom_json import NotifyJSON
from apprise.plugins.discord import NotifyDiscord
from apprise.plugins.growl import NotifyGrowl
from apprise.plugins.telegram import NotifyTelegram

from hookbus.bus.delivery.subscriber import DeliveryError
from hookbus.bus.events.event import Event
from hookbus.bus.events.text import Unit, cut_front, cut_mark
from hookbus.bus.notify.digest import Digest
from hookbus.bus.notify.messages import render_default, split_title, template_for
from hookbus.bus.notify.templates import SAMPLES
from hookbus.bus.secrets import scrub
from hookbus.bus.settings import ConfigError, RetrySettings
from hookbus.config import build_config
from hookbus.subscribers.apprise import fit
from hookbus.subscribers.healthchecks import HealthchecksSubscriber, ping_body, ping_url, run_id
from hookbus.subscribers.slack import BLOCKS_MAX, HEADER_MAX, SECTION_MAX, TEXT_MAX, RateLimiter, SlackSubscriber, payload

from .standins import MockResponse

# DESIGN §6, byte for byte.
SUCCESS = """✅ Backup Job Completed Successfully

Backup job for 'MyRepository' completed successfully.

Tasks Completed: 7, Total: 7
Job ID: job-abc-123"""
CRITICAL_HOOK = """❌ Backup Job Failed - Critical Hook Error

Backup job for 'MyRepository' failed due to critical hook failure.

Failed Hook: Database Dump
Tasks Completed: 2, Skipped: 4, Total: 7
Job ID: job-abc-123"""
BACKUP_ERROR = """❌ Backup Job Failed - Backup Error

Backup job for 'MyRepository' failed during backup process.

Tasks Completed: 5, Skipped: 1, Total: 7
Job ID: job-abc-123"""
WARNING = """⚠️ Backup Job Completed with Warnings

Backup job for 'MyRepository' completed but some tasks failed.

Failed Tasks: hook
Tasks Completed: 6, Skipped: 0, Total: 7
Job ID: job-abc-123"""


def finished(outcome: str, reason: str | None, counts: dict[str, int] | None, **extra: Any) -> dict[str, Any]:
    """backup.job.finished data as `hookbus run` reports it (DESIGN §1)."""
    data: dict[str, Any] = {"job_id": "job-abc-123", "job": "nightly", "repository": "MyRepository",
                            "outcome": outcome, "reason": reason, "failed_hook": None, "failed_tasks": [], **extra}
    if counts is not None:
        data["counts"] = counts
    return data


OUTCOMES = {
    "success": (finished("success", None, {"completed": 7, "failed": 0, "skipped": 0, "total": 7}), SUCCESS),
    "critical_hook": (finished("failed", "critical_hook", {"completed": 2, "failed": 1, "skipped": 4, "total": 7},
                               failed_hook="Database Dump", failed_tasks=["hook"]), CRITICAL_HOOK),
    "backup_error": (finished("failed", "backup_error", {"completed": 5, "failed": 1, "skipped": 1, "total": 7},
                              failed_tasks=["backup"]), BACKUP_ERROR),
    "warning": (finished("warning", "task_failed", {"completed": 6, "failed": 1, "skipped": 0, "total": 7},
                         failed_tasks=["hook"], failed_hook="Log Rotation"), WARNING),
}


def job_event(data: dict[str, Any], type_: str = "backup.job.finished", seq: int | None = 1, **attrs: Any) -> Event:
    return Event(id=f"e-{data.get('outcome')}-{seq}", source="borgitory://host1", type=type_,
                 time=attrs.pop("time", "2026-11-21T03:38:00Z"), subject=attrs.pop("subject", "MyRepository"),
                 data=data, seq=seq)


# -- the documented texts ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(OUTCOMES))
def test_the_four_outcomes_render_byte_for_byte(name: str) -> None:
    data, expected = OUTCOMES[name]
    assert render_default(job_event(data)) == expected


def test_counts_line_is_left_out_for_jobs_reported_without_a_task_list() -> None:
    data = finished("success", None, None)
    assert render_default(job_event(data)) == SUCCESS.replace("Tasks Completed: 7, Total: 7\n", "")
    failed = finished("failed", "critical_hook", None, failed_hook="Database Dump")
    assert "Tasks Completed" not in render_default(job_event(failed))
    assert "Failed Hook: Database Dump" in render_default(job_event(failed))


def test_defaults_never_fail_on_odd_data() -> None:
    for type_ in SAMPLES:
        for data in (None, "plain text", [1, 2], {"counts": "x", "failed_tasks": "hook", "task": 3, "device": []}):
            text = render_default(Event(id="x", source="s://odd", type=type_, data=data))
            assert text.strip()


def test_report_gets_netcfgbus_own_summary_shape_and_lists_failed_devices() -> None:
    text = render_default(SAMPLES["backup.report"])
    assert "Summary: TOTAL=2, OK=1, FAIL=1\n" in text
    assert "         START=2026-Nov-21 03:00:00 AM, STOP=2026-Nov-21 03:01:00 AM\n" in text
    assert "         DURATION=60.000s\n" in text
    assert "FAILURES: 1\nswitch2: timeout connecting" in text


def test_template_table_overrides_by_glob_and_keeps_other_defaults() -> None:
    table = {"backup.job.*": "job {{ data.job_id }}", "digest": "{{ digest.count }}"}
    assert template_for("backup.job.finished", table) == ("backup.job.*", "job {{ data.job_id }}")
    assert template_for("backup.report", table)[0] == "default"
    assert template_for("digest", table) == ("digest", "{{ digest.count }}")
    assert template_for("backup.report", "one for all") == ("", "one for all")


# -- cutting ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("limit", [40, 100, 999, 5000])
def test_cut_front_keeps_the_end_and_says_how_much_was_cut(limit: int) -> None:
    text = "".join(f"line {i}\n" for i in range(1000))
    out = cut_front(text, limit, Unit.CHARACTERS)
    assert len(out) == limit
    mark, kept = out.split("\n", 1)
    assert text.endswith(kept) and kept.endswith("999\n")
    assert mark + "\n" == cut_mark(len(text) - len(kept), Unit.CHARACTERS)


def test_cut_front_bytes_counts_utf8_and_never_splits_a_character() -> None:
    text = "é" * 10_000 + "THE END"
    out = cut_front(text, 1000)
    assert len(out.encode()) <= 1000 and out.endswith("THE END") and "bytes before this" in out
    assert cut_front("short", 1000) == "short"


# -- Slack ------------------------------------------------------------------------------------------

def slack(url: str = "https://hooks.slack.com/services/T000/B000/XXXXXXXX", **over: Any) -> SlackSubscriber:
    config = build_config({"subscribers": [{"name": "ops", "kind": "slack", "webhook_url": url, **over}]}, "test")
    return SlackSubscriber(config.subscribers[0])


@pytest.mark.parametrize("name", list(OUTCOMES))
async def test_slack_sends_block_kit_with_the_text_as_fallback(name: str) -> None:
    data, expected = OUTCOMES[name]
    sub = slack(url=f"https://hooks.slack.com/services/T000/B000/{name}XXXXXXX")
    await sub.start()
    try:
        with aioresponses() as mock:
            mock.post(sub.config.webhook_url, status=200, body="ok", response_class=MockResponse)
            await sub.handle(job_event(data))
            (_, calls), = mock.requests.items()
            body = calls[0].kwargs["json"]
    finally:
        await sub.close()
    assert body["text"] == expected
    header, section, context = body["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": expected.split("\n")[0], "emoji": True}}
    assert section["text"]["text"] == expected.split("\n", 2)[2]
    assert context["type"] == "context" and "backup.job.finished" in context["elements"][0]["text"]


@pytest.mark.parametrize(("status", "body", "permanent", "hint"), [
    (410, "channel_is_archived", True, "archived"),
    (404, "no_service", True, "removed or disabled"),
    (404, "channel_not_found", True, "no longer exists"),
    (403, "action_prohibited", True, "admin"),
    (400, "invalid_payload", True, "could not read"),
    (400, "something_new", True, None),
    (500, "rollup_error", False, None),
    (503, "", False, None),
])
async def test_slack_answers_are_classified(status: int, body: str, permanent: bool, hint: str | None) -> None:
    sub = slack(url=f"https://hooks.slack.com/services/T000/B000/{status}{body}SECRETPART")
    await sub.start()
    try:
        with aioresponses() as mock:
            mock.post(sub.config.webhook_url, status=status, body=body, response_class=MockResponse)
            with pytest.raises(DeliveryError) as caught:
                await sub.handle(job_event(OUTCOMES["success"][0]))
    finally:
        await sub.close()
    assert caught.value.permanent is permanent
    assert str(status) in str(caught.value) and "SECRETPART" not in str(caught.value)
    if hint:
        assert body in str(caught.value) and hint in str(caught.value)


async def test_slack_429_carries_retry_after_and_holds_the_webhook_off() -> None:
    sub = slack(url="https://hooks.slack.com/services/T000/B000/RATELIMITED1")
    await sub.start()
    try:
        with aioresponses() as mock:
            mock.post(sub.config.webhook_url, status=429, body="rate_limited", headers={"Retry-After": "2"},
                      response_class=MockResponse)
            with pytest.raises(DeliveryError) as caught:
                await sub.handle(job_event(OUTCOMES["success"][0]))
    finally:
        await sub.close()
    assert not caught.value.permanent and caught.value.retry_after == 2.0
    from hookbus.subscribers.slack import LIMITER

    assert LIMITER.next_free[sub.config.webhook_url] - time.monotonic() > 1.5


def test_rate_limiter_spaces_messages_per_url_and_refuses_long_waits() -> None:
    limiter = RateLimiter(interval=1.0)
    waits = [limiter.reserve("https://a", max_wait=30) for _ in range(3)]
    assert waits[0] == 0 and 0.9 < waits[1] <= 1.0 and 1.9 < waits[2] <= 2.0
    assert limiter.reserve("https://b", max_wait=30) == 0  # another webhook is not held up
    limiter.hold_off("https://b", 100)
    with pytest.raises(DeliveryError) as caught:
        limiter.reserve("https://b", max_wait=10)
    assert not caught.value.permanent and caught.value.retry_after is not None and caught.value.retry_after > 90


def test_slack_payload_stays_within_slacks_limits_and_keeps_the_end() -> None:
    output = "\n".join(f"borg: processing file {i} <&>" for i in range(20_000)) + "\nLAST LINE"
    text = "❌ " + "Very long title " * 30 + "\n\n" + "x" * 5000 + "\n" + output
    body = payload(text, SAMPLES["backup.task.finished"])
    assert len(body["text"]) <= TEXT_MAX
    assert body["text"].endswith("LAST LINE") and "characters before this" in body["text"]
    assert len(body["blocks"]) <= BLOCKS_MAX
    assert len(body["blocks"][0]["text"]["text"]) <= HEADER_MAX
    sections = [b for b in body["blocks"] if b["type"] == "section"]
    assert sections and all(0 < len(s["text"]["text"]) <= SECTION_MAX for s in sections)
    assert sections[-1]["text"]["text"].endswith("LAST LINE")
    assert "&lt;&amp;&gt;" in sections[-1]["text"]["text"] and "<&>" not in body["text"]


def test_slack_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"subscribers\[0\] \(ops\)\.webhook_url: Field required"):
        build_config({"subscribers": [{"name": "ops", "kind": "slack"}]}, "t")
    with pytest.raises(ConfigError, match=r"subscribers\[0\] \(ops\)\.group_by"):
        build_config({"subscribers": [{"name": "ops", "kind": "slack", "webhook_url": "https://x/y",
                                       "group_by": ["a b"]}]}, "t")
    with pytest.raises(ConfigError, match=r"subscribers\[0\] \(ops\)\.template: .*nope.*backup\.job\.finished"):
        slack(template="{{ data.nope }}")
    with pytest.raises(ConfigError, match=r"subscribers\[0\] \(ops\)\.template\.digest: .*no attribute 'nope'"):
        slack(template={"digest": "{{ digest.nope }}"})
    with pytest.raises(ConfigError, match=r"\.template\.backup\.report: .*syntax|\.template\.backup\.report: "):
        slack(template={"backup.report": "{% if %}"}, events=["backup.report"])
    slack(template={"backup.job.*": "{{ data.job_id }} {{ data.outcome }}"}, events=["backup.job.finished"])


def test_webhook_url_and_its_path_are_secrets() -> None:
    slack(url="https://hooks.slack.com/services/T0/B0/abcdefSECRET")
    assert "abcdefSECRET" not in scrub("posting to /services/T0/B0/abcdefSECRET failed")


# -- healthchecks -----------------------------------------------------------------------------------

def test_rid_is_the_job_id_as_a_uuid_or_a_stable_uuid5_of_it() -> None:
    given = "6f1c2a9e-0d1b-4c2e-9a7b-123456789abc"
    assert run_id(given) == given
    assert run_id("job-abc-123") == run_id("job-abc-123") != run_id("job-abc-124")
    assert uuid.UUID(run_id("job-abc-123")).version == 5


def test_ping_urls_for_uuid_and_slug_checks() -> None:
    by_uuid = "https://hc-ping.com/5f0a1c2e-9a7b-4c3d-8e1f-123456789abc"
    assert ping_url(by_uuid, "/start", "r") == by_uuid + "/start?rid=r"
    assert ping_url(by_uuid + "/", "", None) == by_uuid
    by_slug = "https://hc-ping.com/pingkey1234/db-backup"
    assert ping_url(by_slug, "/fail", "r") == by_slug + "/fail?rid=r&create=1"
    assert ping_url(by_slug + "?create=0", "/log", None) == by_slug + "/log?create=0"


def test_ping_body_keeps_the_message_and_the_end_of_the_output() -> None:
    body = ping_body("❌ failed\n\nJob ID: j", "x" * 50_000 + "END", 10_000)
    assert len(body) <= 10_000
    text = body.decode()
    assert text.startswith("❌ failed\n\nJob ID: j\n\n") and text.endswith("END") and "bytes before this" in text


def healthchecks(**over: Any) -> HealthchecksSubscriber:
    table = {"name": "hc", "kind": "healthchecks", "url": "https://hc-ping.com/5f0a1c2e-9a7b-4c3d-8e1f-123456789abc", **over}
    return HealthchecksSubscriber(build_config({"subscribers": [table]}, "t").subscribers[0])


@pytest.mark.parametrize(("status", "permanent"), [(404, True), (400, True), (409, True), (429, False), (502, False)])
async def test_healthchecks_answers_are_classified(status: int, permanent: bool) -> None:
    sub = healthchecks()
    await sub.start()
    event = job_event(OUTCOMES["backup_error"][0], time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    try:
        with aioresponses() as mock:
            mock.post(ping_url(sub.config.url or "", "/fail", run_id("job-abc-123")), status=status, body="not found",
                      response_class=MockResponse)
            with pytest.raises(DeliveryError) as caught:
                await sub.handle(event)
    finally:
        await sub.close()
    assert caught.value.permanent is permanent
    assert "5f0a1c2e" not in str(caught.value)


async def test_healthchecks_learns_the_servers_ping_body_limit() -> None:
    sub = healthchecks()
    await sub.start()
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    event = job_event(finished("failed", "backup_error", None, tasks=[
        {"name": "backup", "kind": "backup", "status": "failed", "output_tail": "y" * 30_000 + "TAIL"}]), time=now)
    url = ping_url(sub.config.url or "", "/fail", run_id("job-abc-123"))
    try:
        with aioresponses() as mock:
            for _ in range(2):
                mock.post(url, status=200, body="OK", headers={"Ping-Body-Limit": "20000"}, response_class=MockResponse)
            await sub.handle(event)
            await sub.handle(event)
            sizes = [len(call.kwargs["data"]) for calls in mock.requests.values() for call in calls]
    finally:
        await sub.close()
    assert sizes[0] <= 10_000 < sizes[1] <= 20_000


def test_healthchecks_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"subscribers\[0\] \(hc\): .*set url"):
        build_config({"subscribers": [{"name": "hc", "kind": "healthchecks"}]}, "t")
    with pytest.raises(ConfigError, match=r"subscribers\[0\] \(hc\)\.checks: .*nightly: must be a ping URL"):
        build_config({"subscribers": [{"name": "hc", "kind": "healthchecks", "checks": {"nightly": "nope"}}]}, "t")
    with pytest.raises(ConfigError, match=r"\.warning_as"):
        healthchecks(warning_as="maybe")


# -- Apprise -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("plugin", [NotifyJSON, NotifyTelegram, NotifyDiscord, NotifyGrowl])
def test_apprise_messages_fit_each_services_own_limits(plugin: Any) -> None:
    title = "❌ " + "T" * 400
    body = "Backup job failed.\n" + "".join(f"output line {i}\n" for i in range(10_000)) + "LAST"
    t, b = fit(plugin, title, body)
    if plugin.title_maxlen > 0:
        assert len(t) <= plugin.title_maxlen
        assert len(b) <= plugin.body_maxlen
    else:  # Apprise puts the title on the body's first line
        assert len(t) + 2 + len(b) <= plugin.body_maxlen
    assert b.endswith("LAST")
    if plugin.body_max_line_count:
        assert len(b.splitlines()) + (0 if plugin.title_maxlen > 0 else 1) <= plugin.body_max_line_count
    assert "before this" in b


def test_apprise_config_errors_never_echo_the_url() -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({"subscribers": [{"name": "a", "kind": "apprise", "urls": ["nosuch://user:hunter2pass@x/y"]}]}, "t")
    assert "subscribers[0] (a).urls: " in str(caught.value) and "urls[0]" in str(caught.value)
    assert "hunter2pass" not in str(caught.value)
    with pytest.raises(ConfigError, match="set urls"):
        build_config({"subscribers": [{"name": "a", "kind": "apprise"}]}, "t")
    with pytest.raises(ConfigError, match="tags"):
        build_config({"subscribers": [{"name": "a", "kind": "apprise", "urls": ["json://localhost/x"], "tags": ["ops"]}]}, "t")


def test_apprise_url_secrets_are_marked() -> None:
    build_config({"subscribers": [{"name": "a", "kind": "apprise", "urls": [
        "json://user:pa55w0rd@127.0.0.1:9/hook/secret-token-123?-apikey=QWERTYUIOP",
        "tgram://123456789:ABCdefGHIjklMNO/987654321"]}]}, "t")
    line = scrub("POST /hook/secret-token-123?apikey=QWERTYUIOP user:pa55w0rd bot123456789:ABCdefGHIjklMNO")
    for secret in ("secret-token-123", "QWERTYUIOP", "pa55w0rd", "ABCdefGHIjklMNO"):
        assert secret not in line


# -- digests -----------------------------------------------------------------------------------------

def device(i: int, ok: bool = True, job: str = "run-1") -> Event:
    data = {"job_id": job, "device": {"host": f"sw{i}", "os_name": "eos"}, "error": None if ok else "timeout"}
    return Event(id=f"d{i}", source="netcfgbu://nms", type="backup.device.succeeded" if ok else "backup.device.failed",
                 data=data, seq=i)


class Sink:
    def __init__(self, fail: DeliveryError | None = None) -> None:
        self.sent: list[tuple[float, list[Event], dict[str, Any]]] = []
        self.fail = fail
        self.given_up: list[tuple[int, int, str]] = []

    async def send(self, events: list[Event], labels: dict[str, Any]) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append((time.monotonic(), events, labels))

    async def give_up(self, event: Event, attempts: int, error: str) -> None:
        self.given_up.append((event.seq or 0, attempts, error))


def digest(sink: Sink, wait: float = 0.3, interval: float = 0.6, attempts: int = 3) -> Digest:
    return Digest("t", group_by=["job_id"], group_wait=wait, group_interval=interval,
                  retry=RetrySettings(attempts=attempts, initial_delay=0.01, max_delay=0.02), timeout=5,
                  send=sink.send, give_up=sink.give_up)


async def test_digest_groups_a_burst_alertmanager_style_and_holds_until_sent() -> None:
    sink = Sink()
    d = digest(sink)
    start = time.monotonic()
    for i in range(1, 501):
        d.add(device(i, ok=i % 50 != 0))
    d.add(device(9001, job="run-2"))
    assert len(d.held()) == 501
    while len(sink.sent) < 2:
        await asyncio.sleep(0.01)
    assert {len(events) for _, events, _ in sink.sent} == {500, 1}
    assert all(0.3 <= at - start < 0.6 for at, _, _ in sink.sent)  # group_wait, once per group
    assert {labels["job_id"] for _, _, labels in sink.sent} == {"run-1", "run-2"}
    assert not d.held()
    for i in range(501, 511):  # later events of a live group wait for group_interval
        d.add(device(i))
    first = max(at for at, _, _ in sink.sent)
    while len(sink.sent) < 3:
        await asyncio.sleep(0.01)
    assert sink.sent[-1][0] - first >= 0.55 and len(sink.sent[-1][1]) == 10
    await d.close()


async def test_digest_flush_job_sends_the_jobs_group_now() -> None:
    sink = Sink()
    d = digest(sink, wait=30, interval=30)
    for i in range(1, 4):
        d.add(device(i))
    await asyncio.wait_for(d.flush_job("run-1", wait=5), 5)
    assert len(sink.sent) == 1 and len(sink.sent[0][1]) == 3 and not d.held()
    await d.close()


async def test_digest_that_cannot_be_sent_gives_up_every_event_in_it() -> None:
    sink = Sink(fail=DeliveryError("https://x/*** answered 410: channel_is_archived", permanent=True))
    d = digest(sink, wait=0.05)
    for i in range(1, 6):
        d.add(device(i))
    while len(sink.given_up) < 5:
        await asyncio.sleep(0.01)
    assert sorted(seq for seq, _, _ in sink.given_up) == [1, 2, 3, 4, 5]
    assert all(attempts == 1 and "channel_is_archived" in error for _, attempts, error in sink.given_up)
    assert not d.held()
    retried = Sink(fail=DeliveryError("timed out"))
    d2 = digest(retried, wait=0.01, attempts=3)
    d2.add(device(1))
    while not retried.given_up:
        await asyncio.sleep(0.01)
    assert retried.given_up[0][1] == 3  # retried, then given up
    await d.close()
    await d2.close()


async def test_digest_close_keeps_events_held_so_they_come_again() -> None:
    sink = Sink()
    d = digest(sink, wait=30)
    d.add(device(1))
    d.add(device(1))  # the same seq again (a replay) is not counted twice
    assert d.held() == {1}
    await d.close()
    assert not sink.sent


async def test_notifier_sends_a_jobs_pending_digest_before_its_report() -> None:
    sub = slack(group_wait=30, events=["backup.device.*", "backup.report"])
    order: list[str] = []

    async def deliver(text: str, events: list[Event]) -> None:
        order.append(split_title(text)[0])

    sub.deliver = deliver  # type: ignore[method-assign]
    for i in range(1, 4):
        await sub.handle(device(i, ok=i != 2))
    assert order == [] and set(sub.held()) == {1, 2, 3}
    await sub.handle(SAMPLES["backup.report"])
    assert order == ["❌ netcfgbu backup run-1: 3 devices, 1 failed", "❌ netcfgbu backup: 1 of 2 devices failed"]
    assert not sub.held()
    await sub.close()


# -- the manual's examples -----------------------------------------------------------------------------

def test_the_manuals_notification_examples_are_valid_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import re
    import tomllib
    from pathlib import Path

    for name, value in {"SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/x1234567",
                        "NTFY_URL": "ntfys://ntfy.sh/my-backups", "TELEGRAM_URL": "tgram://123456789:abcdefghij/42",
                        "HC_PING_URL": "https://hc-ping.com/5f0a1c2e-9a7b-4c3d-8e1f-123456789abc",
                        "ALERT_APPRISE_URL": "json://localhost/alerts"}.items():
        monkeypatch.setenv(name, value)
    docs = Path(__file__).parent.parent / "docs"
    pages = ["messages.md", "subscribers/slack.md", "subscribers/apprise.md", "subscribers/healthchecks.md"]
    blocks = [block for page in pages for block in re.findall(r"```toml\n(.+?)\n```", (docs / page).read_text(), re.S)]
    assert len(blocks) >= 5
    for block in blocks:
        if block.startswith("template"):
            block = ('[[subscribers]]\nname = "t"\nkind = "slack"\nwebhook_url = "env:SLACK_WEBHOOK_URL"\n'
                     'events = ["backup.job.finished", "backup.device.failed"]\n' + block)
        table = tomllib.loads(block)
        config = build_config(table, "docs")
        assert [sub.name for sub in config.subscribers] == [sub["name"] for sub in table["subscribers"]]


# -- DESIGN §6: the `Error:` line ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["critical_hook", "backup_error", "warning"])
def test_failure_and_warning_texts_say_why_after_the_description_line(name: str) -> None:
    data, expected = OUTCOMES[name]
    error = "Repository /srv/borg/main does not exist."
    text = render_default(job_event({**data, "error": error}))
    lines = expected.split("\n")
    assert text == "\n".join([*lines[:3], f"Error: {error}", *lines[3:]])
    # without an error the text is the documented one, byte for byte
    assert render_default(job_event({**data, "error": None})) == expected


def test_the_error_line_is_one_line_of_at_most_300_characters() -> None:
    data, _ = OUTCOMES["backup_error"]
    text = render_default(job_event({**data, "error": "first\nsecond " + "x" * 400}))
    line = next(line for line in text.splitlines() if line.startswith("Error: "))
    assert line.startswith("Error: first second xxx") and len(line) == len("Error: ") + 300
    generic = render_default(job_event(finished("failed", "task_failed", None, error="prune failed: exit status 1")))
    assert generic.split("\n")[2:4] == ["Backup job for 'MyRepository' failed because a critical task failed.",
                                        "Error: prune failed: exit status 1"]
    assert "Error:" not in render_default(job_event(OUTCOMES["success"][0] | {"error": "ignored"}))
