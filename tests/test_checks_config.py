"""The [[checks]] tables and the jobs' own checks (DESIGN §10), and durations in
every time-span key: what is accepted, and errors that name the key at fault."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hookbus import cli
from hookbus.bus.settings import ConfigError
from hookbus.config import Config, build_config

UUID_KEY = "5f0a1c2e-9a7b-4c3d-8e1f-123456789abc"
BADGE = "b4dge-key-0123456789"
DURATION_FORMS = 'must be a number of seconds or a duration such as "30s", "5m", "4h", "1d", "1h30m"'


def job(name: str = "nightly", **keys: Any) -> dict[str, Any]:
    return {"name": name, "repository": "MyRepository", "backup": "borg create /repo::{now} /data", **keys}


def config_error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        build_config(raw, "test")
    return str(info.value)


def test_a_check_table_with_every_key() -> None:
    config = build_config({"checks": [{
        "name": "nightly-db", "job": "nightly", "repository": "MyRepository", "key": UUID_KEY, "schedule": "0 2 * * *",
        "tz": "Europe/Berlin", "grace": "1h", "max_runtime": "6h", "down_after_failures": 2, "repeat": "1d", "badge_key": BADGE,
    }]}, "test")
    [check] = config.checks
    assert (check.name, check.job, check.repository, check.key) == ("nightly-db", "nightly", "MyRepository", UUID_KEY)
    assert (check.schedule, check.tz, check.period) == ("0 2 * * *", "Europe/Berlin", None)
    assert (check.grace, check.max_runtime, check.down_after_failures, check.repeat) == (3600, 6 * 3600, 2, 86400)
    assert check.badge_key == BADGE


def test_check_defaults() -> None:
    [check] = build_config({"checks": [{"job": "nightly", "period": 86400}]}, "test").checks
    assert (check.name, check.key, check.repository, check.tz, check.grace) == ("nightly", None, None, "UTC", 3600)
    assert (check.max_runtime, check.down_after_failures, check.repeat, check.badge_key) == (None, 1, None, None)


def test_a_job_with_a_schedule_gets_its_check() -> None:
    config = build_config({
        "jobs": [job(schedule="30 2 * * *", tz="Europe/Berlin", grace="30m", max_runtime="4h", repeat="12h"),
                 job("weekly", period="1w", down_after_failures=3), job("manual")],
        "checks": [{"job": "pinged", "key": UUID_KEY}],
    }, "test")
    assert [c.name for c in config.checks] == ["pinged", "nightly", "weekly"]  # the tables, then the jobs'; "manual" has none
    nightly, weekly = config.checks[1:]
    assert (nightly.job, nightly.repository, nightly.key) == ("nightly", "MyRepository", None)
    assert (nightly.schedule, nightly.tz, nightly.grace, nightly.max_runtime, nightly.repeat) == (
        "30 2 * * *", "Europe/Berlin", 1800, 4 * 3600, 12 * 3600)
    assert (weekly.period, weekly.schedule, weekly.down_after_failures, weekly.grace) == (7 * 86400, None, 3, 3600)


def test_a_check_table_named_as_a_scheduled_job_is_an_error_naming_both() -> None:
    message = config_error({"jobs": [job(schedule="0 2 * * *")], "checks": [{"job": "nightly", "key": UUID_KEY}]})
    assert message.startswith("checks[0] (nightly).name: jobs[0] (nightly) has a schedule")
    # another name, or a job without a schedule: fine
    build_config({"jobs": [job(schedule="0 2 * * *")], "checks": [{"name": "pings", "job": "nightly", "key": UUID_KEY}]}, "t")
    build_config({"jobs": [job()], "checks": [{"job": "nightly", "key": UUID_KEY, "schedule": "0 2 * * *"}]}, "t")


BAD = [
    ({"checks": [{"job": "nightly", "schedule": "0 25 * * *"}]},
     "checks[0] (nightly).schedule: '0 25 * * *' is not a cron schedule (hour 25 out of range 0-23)"),
    ({"checks": [{"job": "nightly", "schedule": "61 2 * * *"}]}, "checks[0] (nightly).schedule: '61 2 * * *' is not a cron schedule (minute 61"),
    ({"checks": [{"name": "db", "job": "nightly", "schedule": "0 2 * *"}]},
     "checks[0] (db).schedule: '0 2 * *' is not a cron schedule (4 field(s); a cron schedule has 5"),
    ({"checks": [{"job": "nightly", "schedule": "@daily"}]}, "the @ shortcuts are not supported"),
    ({"checks": [{"job": "nightly", "schedule": "0 2 * * FUNDAY"}]}, "checks[0] (nightly).schedule: '0 2 * * FUNDAY' is not a cron schedule (bad day-of-week"),
    ({"checks": [{"job": "nightly", "schedule": "0 2 30 2 *"}]}, "checks[0] (nightly).schedule: '0 2 30 2 *' is not a cron schedule (bad day-of-month"),
    ({"checks": [{"job": "nightly", "schedule": "0 2 * * *", "tz": "Europe/Berln"}]},
     "checks[0] (nightly).tz: unknown time zone 'Europe/Berln'; use an IANA name such as Europe/Berlin or UTC"),
    ({"checks": [{"job": "nightly", "tz": "../../etc/passwd"}]}, "checks[0] (nightly).tz: unknown time zone"),
    ({"checks": [{"job": "nightly", "schedule": "0 2 * * *", "period": "1d"}]},
     "checks[0] (nightly): schedule and period: give one or the other"),
    ({"checks": [{"job": "nightly"}, {"job": "nightly", "key": UUID_KEY}]}, "checks[1] (nightly).name: 'nightly' is used twice"),
    ({"checks": [{"job": "a", "name": "x"}, {"job": "b", "name": "x"}]}, "checks[1] (x).name: 'x' is used twice"),
    ({"checks": [{"job": "nightly", "name": "a/b"}]}, "checks[0] (a/b).name: must not contain '/'"),
    ({"checks": [{"job": "nightly", "key": "nightly-1234567890", "badge_key": "nightly-1234567890"}]},
     "checks[0] (nightly): badge_key: must not be the ping key"),
    ({"checks": [{"job": "a", "key": "shared-key-1234567"}, {"job": "b", "badge_key": "shared-key-1234567"}]},
     "checks[1] (b).badge_key: 'shared-key-1234567' is used twice (also as a ping key)"),
    ({"checks": [{"job": "nightly", "badge_key": "short"}]}, "checks[0] (nightly).badge_key: must be 16 to 200 characters"),
    ({"checks": [{"job": "nightly", "badge_key": "not/a/badge/key/at/all"}]}, "checks[0] (nightly).badge_key: must be 16"),
    ({"checks": [{"job": "nightly", "down_after_failures": 0}]}, "checks[0] (nightly).down_after_failures: Input should be greater than or equal to 1"),
    ({"checks": [{"job": "nightly", "grace": "an hour"}]}, f"checks[0] (nightly).grace: {DURATION_FORMS}"),
    ({"checks": [{"job": "nightly", "period": "0s"}]}, "checks[0] (nightly).period: Input should be greater than 0"),
    ({"checks": [{"job": "nightly", "repeat": "0s"}]}, "checks[0] (nightly).repeat: Input should be greater than 0"),
    ({"checks": [{"job": "nightly", "max_runtime": "2y"}]}, f"checks[0] (nightly).max_runtime: {DURATION_FORMS}"),
    ({"checks": [{"job": "nightly", "every": "1d"}]}, "checks[0] (nightly).every: unknown key"),
    ({"checks": {"job": "nightly"}}, "checks: must be an array of tables"),
    ({"jobs": [job(schedule="0 2 * * *", period="1d")]}, "jobs[0] (nightly): schedule and period: give one or the other"),
    ({"jobs": [job(schedule="every night")]}, "jobs[0] (nightly).schedule: 'every night' is not a cron schedule"),
    ({"jobs": [job(schedule="0 2 * * *", tz="Mars/Olympus")]}, "jobs[0] (nightly).tz: unknown time zone 'Mars/Olympus'"),
    ({"jobs": [job(period="fortnightly")]}, f"jobs[0] (nightly).period: {DURATION_FORMS}"),
    ({"jobs": [job(backup={"command": "true", "timeout": "soon"})]}, f"jobs[0] (nightly).backup.timeout: {DURATION_FORMS}"),
    ({"jobs": [job(backup={"command": "true", "timeout": "8d"})]}, "jobs[0] (nightly).backup.timeout: Input should be less than or equal to 604800"),
    ({"jobs": [job(backup={"command": "true", "timeout": True})]}, f"jobs[0] (nightly).backup.timeout: {DURATION_FORMS}"),
    ({"http": {"body_timeout": "1 minute"}}, f"http.body_timeout: {DURATION_FORMS}"),
    ({"bus": {"retention_days": "a month"}}, 'bus.retention_days: must be a number of days or a duration such as "36h", "30d", "2w"'),
    ({"subscribers": [{"name": "audit", "kind": "jsonl", "path": "x", "retry": {"max_delay": "5 m s"}}]},
     f"subscribers[0] (audit).retry.max_delay: {DURATION_FORMS}"),
]


@pytest.mark.parametrize("raw,message", BAD, ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(BAD)])
def test_errors_name_the_key(raw: dict[str, Any], message: str) -> None:
    assert message in config_error(raw)


def sub(kind: str, **keys: Any) -> Config:
    base = {"jsonl": {"path": "x"}, "slack": {"webhook_url": "https://hooks.slack.com/services/T0/B0/x"},
            "healthchecks": {"url": f"https://hc-ping.com/{UUID_KEY}"}}[kind]
    return build_config({"subscribers": [{"name": "s", "kind": kind, **base, **keys}]}, "test")


def test_durations_are_accepted_in_every_time_span_key() -> None:
    assert sub("jsonl", timeout="2m").subscribers[0].timeout == 120
    assert sub("jsonl", retry={"max_delay": "1h", "initial_delay": "500"}).subscribers[0].retry.max_delay == 3600
    assert sub("jsonl", retry={"initial_delay": "1m30s"}).subscribers[0].retry.initial_delay == 90
    slack = sub("slack", group_wait="0s", group_interval="10m").subscribers[0]
    assert (slack.group_wait, slack.group_interval) == (0, 600)
    assert sub("healthchecks", max_age="2h").subscribers[0].max_age == 7200
    config = build_config({"bus": {"heartbeat": "2s", "retention_days": "2w"},
                           "http": {"body_timeout": "1m", "hmac_tolerance": "5m"}}, "test")
    assert (config.bus.heartbeat, config.bus.retention_days, config.http.body_timeout, config.http.hmac_tolerance) == (2, 14, 60, 300)
    assert build_config({"bus": {"retention_days": 7}}, "test").bus.retention_days == 7  # a number is days, as before
    [nightly] = build_config({"jobs": [job(backup={"command": "true", "timeout": "4h"},
                                           pre_hooks=[{"name": "dump", "command": "true", "timeout": "10m"}])]}, "test").jobs
    assert (nightly.backup.timeout, nightly.pre_hooks[0].timeout) == (4 * 3600, 600)
    assert sub("jsonl", timeout=45).subscribers[0].timeout == 45  # numbers of seconds as before


def test_durations_keep_their_bounds() -> None:
    assert "http.body_timeout: Input should be less than or equal to 3600" in config_error({"http": {"body_timeout": "2h"}})
    assert "bus.heartbeat: Input should be greater than 0" in config_error({"bus": {"heartbeat": "0s"}})
    assert "subscribers[0] (s).group_wait: Input should be less than or equal to 86400" in config_error(
        {"subscribers": [{"name": "s", "kind": "slack", "webhook_url": "https://hooks.slack.com/services/T0/B0/x", "group_wait": "2d"}]})


@pytest.fixture
def main(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The command line in this process, without its logging set-up (it would replace pytest's handlers)."""
    monkeypatch.setattr(cli, "setup_logging", lambda level: None)
    return cli.main


def test_check_config_lists_the_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str], main: Any) -> None:
    path = tmp_path / "hookbus.toml"
    path.write_text(f'''
[[checks]]
job = "pinged"
key = "{UUID_KEY}"
period = "1d"

[[jobs]]
name = "nightly"
repository = "MyRepository"
backup = "true"
schedule = "30 2 * * *"
tz = "Europe/Berlin"
max_runtime = "6h"
''')
    assert main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 check(s):" in out
    assert "  pinged: every 1d (grace 1h, ping key)" in out
    assert "  nightly: at 02:30 every day (Europe/Berlin) (repository MyRepository, grace 1h, max runtime 6h)" in out
    assert UUID_KEY not in out


def test_check_config_reports_a_bad_schedule(tmp_path: Path, capsys: pytest.CaptureFixture[str], main: Any) -> None:
    path = tmp_path / "hookbus.toml"
    path.write_text('[[checks]]\njob = "nightly"\nschedule = "0 25 * * *"\n')
    with pytest.raises(SystemExit) as info:
        main(["check-config", "--config", str(path)])
    assert info.value.code == 2
    assert "checks[0] (nightly).schedule: '0 25 * * *' is not a cron schedule (hour 25 out of range 0-23)" in capsys.readouterr().err


def test_the_manuals_check_example_is_valid_config() -> None:
    text = (Path(__file__).parent.parent / "docs" / "checks.md").read_text()
    section = text.split("\n## Keys of a check\n", 1)[1].split("\n## ", 1)[0]
    [check] = build_config(tomllib.loads(re.findall(r"```toml\n(.+?)\n```", section, re.S)[0]), "docs").checks
    assert (check.name, check.schedule, check.tz, check.grace, check.max_runtime, check.repeat) == (
        "nightly", "0 2 * * *", "Europe/Berlin", 3600, 6 * 3600, 86400)
