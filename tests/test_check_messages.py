"""The default texts of the checks engine's events (DESIGN §10): a check down
(missed, running too long, failing) and back up, and a run's anomaly; overriding
them, and who gets them by default."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from aioresponses import aioresponses

from hookbus.bus.events.event import Event
from hookbus.bus.notify.messages import TEMPLATES, render_default, render_message
from hookbus.bus.notify.templates import SAMPLES, format_duration
from hookbus.bus.settings import ConfigError
from hookbus.subscribers.apprise import AppriseSubscriber
from hookbus.subscribers.healthchecks import HealthchecksSubscriber
from hookbus.subscribers.slack import SlackSubscriber

from .conftest import Site
from .standins import MockResponse, StandIn, ok, standin  # noqa: F401 - standin is a fixture
from .test_notify_units import healthchecks, slack
from .test_process import run_cli

CHECK_TYPES = ["backup.check.down", "backup.check.up", "backup.job.anomaly"]

# DESIGN §10, byte for byte.
MISSED = """❌ Backup Missed - nightly

No run of 'nightly' for 'MyRepository' started by 2026-12-04 03:00 UTC (schedule 0 2 * * *, grace 1h).

Last run: 2026-12-03 02:00 UTC, success"""
TOO_LONG = """❌ Backup Running Too Long - nightly

'nightly' for 'MyRepository' started at 2026-12-04 02:00 UTC and has not finished after 6h."""
BACK = """✅ Backup Back to Normal - nightly

'nightly' for 'MyRepository' succeeded at 2026-12-04 05:12 UTC after 3h 12m down."""


def check_event(type_: str, **changes: Any) -> Event:
    """The sample event of a type with some of its data changed, as the checks engine publishes it."""
    sample = SAMPLES[type_]
    return dataclasses.replace(sample, source="hookbus://checks", data={**sample.fields, **changes})


def text(type_: str, **changes: Any) -> str:
    """The default text, from the type's own template (no fallback to the generic one)."""
    return render_message(TEMPLATES[type_], check_event(type_, **changes))


TOO_LONG_DATA = {"reason": "running_too_long", "started_at": "2026-12-04T02:00:00.000Z", "expected_at": None,
                 "deadline": None, "max_runtime_s": 21600, "last_seen": "2026-12-04T02:00:00.000Z",
                 "last_outcome": None, "job_id": "job-abc-124"}
FAILED_DATA = {"reason": "failed", "expected_at": None, "deadline": None, "failures": 3,
               "last_seen": "2026-12-04T02:05:00.000Z", "last_outcome": "failed", "error": "Repository is locked",
               "job_id": "job-abc-125"}


# -- the documented texts ---------------------------------------------------------------------------------

def test_the_three_design_texts_render_byte_for_byte() -> None:
    assert text("backup.check.down") == MISSED
    assert render_default(SAMPLES["backup.check.down"]) == MISSED
    assert text("backup.check.down", **TOO_LONG_DATA) == TOO_LONG
    assert text("backup.check.up") == BACK
    assert render_default(SAMPLES["backup.check.up"]) == BACK


def test_samples_carry_every_field_the_checks_engine_publishes() -> None:
    down = {"check", "job", "repository", "reason", "expected_at", "deadline", "schedule", "grace_s", "started_at",
            "max_runtime_s", "last_seen", "last_outcome", "error", "failures", "job_id", "reminder", "after_silence"}
    assert set(SAMPLES["backup.check.down"].fields) == down
    assert set(SAMPLES["backup.check.up"].fields) == {"check", "job", "repository", "down_since", "down_for_s", "at",
                                                      "outcome", "job_id"}
    assert set(SAMPLES["backup.job.anomaly"].fields) == {"job_id", "job", "repository", "metric", "value", "median",
                                                         "runs"}


# -- the variants ------------------------------------------------------------------------------------------

def test_failing_says_how_often_and_why() -> None:
    assert text("backup.check.down", **FAILED_DATA) == """❌ Backup Failing - nightly

'nightly' for 'MyRepository' failed 3 times in a row, last at 2026-12-04 02:05 UTC.

Error: Repository is locked
Job ID: job-abc-125"""
    once = {**FAILED_DATA, "failures": 1, "error": None, "job_id": None}
    assert text("backup.check.down", **once) == """❌ Backup Failing - nightly

'nightly' for 'MyRepository' failed at 2026-12-04 02:05 UTC."""
    long_error = text("backup.check.down", **{**FAILED_DATA, "error": "x" * 1000})
    assert "Error: " + "x" * 300 + "\n" in long_error  # at most 300 characters, as DESIGN §6


def test_missed_without_repository_with_a_period_never_seen() -> None:
    assert text("backup.check.down", repository=None, schedule="every 1d", last_seen=None, last_outcome=None) == \
        """❌ Backup Missed - nightly

No run of 'nightly' started by 2026-12-04 03:00 UTC (every 1d, grace 1h).

No run seen yet."""
    tz = text("backup.check.down", schedule="0 2 * * * Europe/Berlin", grace_s=1800)
    assert "(schedule 0 2 * * * Europe/Berlin, grace 30m)." in tz
    bare = text("backup.check.down", schedule=None, grace_s=None, deadline=None, expected_at=None)
    assert "\n\nNo run of 'nightly' for 'MyRepository' started when due.\n\n" in bare


def test_missed_after_a_failed_run_gives_its_error() -> None:
    assert text("backup.check.down", last_outcome="failed", error="disk full").endswith(
        "\n\nLast run: 2026-12-03 02:00 UTC, failed\nError: disk full")


def test_running_too_long_without_a_start_or_a_limit() -> None:
    assert text("backup.check.down", **{**TOO_LONG_DATA, "repository": None}) == \
        TOO_LONG.replace(" for 'MyRepository'", "")
    assert text("backup.check.down", **{**TOO_LONG_DATA, "started_at": None, "max_runtime_s": None}).endswith(
        "\n\n'nightly' for 'MyRepository' has not finished in time.")


@pytest.mark.parametrize(("changes", "title"), [
    ({"reminder": 2}, "❌ Backup Still Missed - nightly (reminder 2)"),
    ({**TOO_LONG_DATA, "reminder": 1}, "❌ Backup Still Running Too Long - nightly (reminder 1)"),
    ({**FAILED_DATA, "reminder": 3}, "❌ Backup Still Failing - nightly (reminder 3)"),
    ({"after_silence": True}, "❌ Backup Missed - nightly (silence ended)"),
    ({**FAILED_DATA, "after_silence": True}, "❌ Backup Failing - nightly (silence ended)"),
    ({"reminder": 2, "after_silence": True}, "❌ Backup Still Missed - nightly (reminder 2, silence ended)"),
    ({"check": "nightly-db", "reason": "paused?"}, "❌ Backup Down - nightly-db"),
])
def test_reminders_and_silences_say_so_in_the_title_and_keep_the_text(changes: dict[str, Any], title: str) -> None:
    message = text("backup.check.down", **changes)
    assert message.split("\n")[0] == title
    first = text("backup.check.down", **{**changes, "reminder": 0, "after_silence": False})
    assert message.split("\n", 1)[1] == first.split("\n", 1)[1]


def test_back_to_normal_variants() -> None:
    assert text("backup.check.up", repository=None, outcome="warning", down_for_s=90000) == \
        """✅ Backup Back to Normal - nightly

'nightly' completed with warnings at 2026-12-04 05:12 UTC after 1d 1h down."""
    assert text("backup.check.up", check="nightly-db", at=None, down_for_s=None).endswith(
        "- nightly-db\n\n'nightly' for 'MyRepository' succeeded.")


def test_anomaly_for_both_metrics() -> None:
    assert text("backup.job.anomaly") == """⚠️ Backup Anomaly - nightly

Run job-abc-123 of 'nightly' for 'MyRepository' took 4s, less than a third of its median 2h 5m over the last 5 good runs."""
    assert text("backup.job.anomaly", metric="data_added", value=12_300, median=3.1 * 1024 ** 3) == \
        """⚠️ Backup Anomaly - nightly

Run job-abc-123 of 'nightly' for 'MyRepository' added 12.0 KiB, less than a third of its median 3.1 GiB over the last 5 good runs."""
    assert text("backup.job.anomaly", value=30_000, job_id=None, repository=None, runs=1).endswith(
        "\n\nA run of 'nightly' took 8h 20m, more than 3 times its median 2h 5m over the last good run.")


@pytest.mark.parametrize("type_", CHECK_TYPES)
def test_check_texts_never_fail_on_odd_data(type_: str) -> None:
    odd: list[Any] = [None, "plain", [1], {}, {"reason": "missed", "reminder": "x", "failures": "3", "grace_s": "1h",
                                             "schedule": 5, "error": 42, "metric": "data_added", "value": "big",
                                             "median": 0, "runs": "five", "down_for_s": "long"},
                      {"reason": "failed", "failures": 2}, {"reason": "running_too_long"}, {"metric": "duration_s"}]
    for data in odd:
        message = render_message(TEMPLATES[type_], Event(id="x", source="hookbus://checks", type=type_, data=data))
        assert message.split("\n")[0].strip()


def test_compact_durations() -> None:
    cases = {0: "0s", 0.4: "0.4s", 4: "4s", 4.2: "4.2s", 45: "45s", 125: "2m 5s", 3600: "1h", 3660: "1h 1m",
             11_520: "3h 12m", 11_559: "3h 12m", 21_600: "6h", 21_640: "6h", 7500: "2h 5m", 86_400: "1d",
             90_000: "1d 1h", 93_600 + 59: "1d 2h"}
    assert {v: format_duration(v, compact=True) for v in cases} == cases
    assert format_duration(3723) == "1h 02m 03s" and format_duration(4.2) == "4.2s"  # the long form is unchanged
    assert format_duration("soon", compact=True) == "soon"


# -- overriding, and who gets them ---------------------------------------------------------------------------

def test_a_subscriber_template_table_overrides_check_texts_by_glob() -> None:
    sub = slack(template={"backup.check.*": "{{ data.check }} is {{ type.split('.')[-1] }}"})
    assert sub.message(SAMPLES["backup.check.down"]) == "nightly is down"
    assert sub.message(SAMPLES["backup.check.up"]) == "nightly is up"
    assert sub.message(SAMPLES["backup.job.anomaly"]) == render_default(SAMPLES["backup.job.anomaly"])
    own = slack(template={"backup.job.anomaly": "{{ data.metric }} {{ format_duration(data.value, compact=True) }}"})
    assert own.message(SAMPLES["backup.job.anomaly"]) == "duration_s 4s"


def test_templates_are_checked_against_the_check_samples_at_start() -> None:
    with pytest.raises(ConfigError, match=r"\.template\.backup\.check\.\*: .*no attribute 'outcome'.*"
                                          r"rendering a sample backup\.check\.down event"):
        slack(template={"backup.check.*": "{{ data.outcome }}"})
    with pytest.raises(ConfigError, match=r"rendering a sample backup\.job\.anomaly event"):
        slack(template={"backup.job.anomaly": "{{ data.check }}"})


def test_the_notifiers_take_check_events_by_default_and_healthchecks_does_not_ping_them() -> None:
    for kind in (SlackSubscriber, AppriseSubscriber):
        assert set(CHECK_TYPES) <= set(kind.default_events)
    hc = healthchecks()
    for type_ in CHECK_TYPES:
        assert hc.plan(SAMPLES[type_]) == f"{type_} is not pinged"
    assert not set(CHECK_TYPES) & set(HealthchecksSubscriber.default_events)


def test_notify_type_of_check_events() -> None:
    sub = slack()
    assert sub.notify_type([SAMPLES["backup.check.down"]]) == "failure"
    assert sub.notify_type([check_event("backup.check.up", outcome="warning")]) == "success"
    assert sub.notify_type([SAMPLES["backup.job.anomaly"]]) == "warning"


async def test_slack_sends_a_check_down_as_it_sends_a_job() -> None:
    sub = slack(url="https://hooks.slack.com/services/T000/B000/checksXXXXXXX")
    await sub.start()
    try:
        with aioresponses() as mock:
            mock.post(sub.config.webhook_url, status=200, body="ok", response_class=MockResponse)
            await sub.handle(check_event("backup.check.down"))
            (_, calls), = mock.requests.items()
            body = calls[0].kwargs["json"]
    finally:
        await sub.close()
    assert body["text"] == MISSED
    assert body["blocks"][0]["text"]["text"] == "❌ Backup Missed - nightly"


# -- hookbus test ---------------------------------------------------------------------------------------------

async def test_hookbus_test_shows_and_sends_a_check_message(site: Site, standin: StandIn) -> None:
    standin.on("/services/", ok())
    site.configure([{"name": "ops", "kind": "slack", "webhook_url": f"{standin.url}/services/T0/B0/opsSECRET123"}])
    result = await run_cli("test", "ops", "--type", "backup.check.down", "--config", str(site.config))
    assert result.returncode == 0, result.stderr
    assert f"ops (slack), sample backup.check.down:\n\n{MISSED}\n" in result.stdout
    assert "sent to ops" in result.stdout and "opsSECRET123" not in result.stdout + result.stderr
    (sent,) = standin.to("/services/")
    assert sent.json()["text"] == MISSED
    for type_, expected in (("backup.check.up", BACK), ("backup.job.anomaly", "⚠️ Backup Anomaly - nightly\n")):
        other = await run_cli("test", "ops", "--type", type_, "--config", str(site.config))
        assert other.returncode == 0 and expected in other.stdout, other.stderr


def test_the_manuals_check_texts_are_the_defaults() -> None:
    page = (Path(__file__).parent.parent / "docs" / "messages.md").read_text()
    section = page.split("The checks that watch for the backup that never ran", 1)[1].split("Every other event", 1)[0]
    blocks = section.split("```\n")[1::2]
    assert [b.rstrip("\n") for b in blocks] == [
        MISSED, TOO_LONG, text("backup.check.down", **FAILED_DATA), BACK, text("backup.job.anomaly")]
