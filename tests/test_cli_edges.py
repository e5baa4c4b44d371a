"""Issue 17's rough edges, each through the real CLI: global options before the
command, `hookbus run` without the notifiers' secrets, and the small ones."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from hookbus.bus.events.event import parse_event
from hookbus.bus.notify.messages import render_default
from hookbus.cli import build_parser

from .conftest import Site
from .test_jobs import add_jobs, mark, spooled_events
from .test_process import CliResult, jsonl_sub, run_cli

# -- 1. global options: before or after the command, the later one winning ----------------------


async def test_config_before_the_command_is_the_one_checked(site: Site, tmp_path: Path) -> None:
    site.configure([jsonl_sub(site, "elsewhere")])
    other = tmp_path / "other.toml"
    site.config.rename(other)
    away = tmp_path / "away"
    away.mkdir()
    (away / "hookbus.toml").write_text('[[subscribers]]\nname = "local"\nkind = "jsonl"\npath = "x.jsonl"\n')
    before = await run_cli("--config", str(other), "check-config", cwd=away)
    assert before.returncode == 0, before.stderr
    assert f"{other}: OK" in before.stdout and "elsewhere (jsonl)" in before.stdout
    after = await run_cli("check-config", "--config", str(other), cwd=away)
    assert f"{other}: OK" in after.stdout
    # given twice, the later one wins
    both = await run_cli("--config", str(other), "check-config", "--config", str(away / "hookbus.toml"), cwd=away)
    assert "local (jsonl)" in both.stdout and "elsewhere" not in both.stdout
    assert "local (jsonl)" in (await run_cli("check-config", cwd=away)).stdout


async def test_log_level_before_the_command_is_used(site: Site) -> None:
    site.configure([jsonl_sub(site)])
    args = ("--config", str(site.config))
    before = await run_cli("--log-level", "DEBUG", *args, "status", "--timeout", "0.5")
    assert before.returncode == 3
    assert " DEBUG " in before.stderr, before.stderr
    after = await run_cli("status", "--log-level", "DEBUG", *args, "--timeout", "0.5")
    assert " DEBUG " in after.stderr
    later_wins = await run_cli("--log-level", "DEBUG", "status", "--log-level", "INFO", *args, "--timeout", "0.5")
    assert later_wins.returncode == 3 and " DEBUG " not in later_wins.stderr, later_wins.stderr
    from_env = await run_cli("status", *args, "--timeout", "0.5", env={"HOOKBUS_LOG_LEVEL": "DEBUG"})
    assert " DEBUG " in from_env.stderr
    plain = await run_cli("status", *args, "--timeout", "0.5", env={"HOOKBUS_LOG_LEVEL": ""})
    assert " DEBUG " not in plain.stderr and plain.returncode == 3


# -- 2. `hookbus run` backs up without the notifiers' secrets ------------------------------------

SLACK_ON_ENV = {"name": "ops", "kind": "slack", "events": ["backup.job.finished"], "webhook_url": "env:SLACK_WEBHOOK_URL"}


def without(*names: str, **extra: str) -> dict[str, str]:
    """This process's environment without `names`, plus `extra`."""
    return {**{k: v for k, v in os.environ.items() if k not in names}, **extra}


async def run_cli_in(env: dict[str, str], *args: str) -> CliResult:
    """run_cli with exactly this environment (run_cli adds to os.environ and cannot take a variable away)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hookbus.cli", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return CliResult(proc.returncode or 0, out.decode(), err.decode())


async def test_run_backs_up_when_a_notifier_secret_is_missing(site: Site, tmp_path: Path) -> None:
    site.configure([jsonl_sub(site), SLACK_ON_ENV])
    # nor the HTTP listener's token: `run` does not serve HTTP
    site.config.write_text(site.config.read_text().replace("[http]\n", '[http]\ntokens = ["env:HOOKBUS_TOKEN"]\n'))
    add_jobs(site, [{"name": "nightly", "repository": "MyRepository", "backup": mark("backup"),
                     "pre_hooks": [{"name": "Dump", "command": mark("pre")}]}])
    env = without("SLACK_WEBHOOK_URL", "HOOKBUS_TOKEN", MARKS=str(tmp_path))
    ran = await run_cli_in(env, "run", "nightly", "--config", str(site.config), "--timeout", "0.5")
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "pre").exists() and (tmp_path / "backup").exists()
    assert "SLACK_WEBHOOK_URL" not in ran.stderr and "HOOKBUS_TOKEN" not in ran.stderr
    assert "✅ completed" in ran.stdout
    checked = await run_cli_in({**env, "HOOKBUS_TOKEN": "a-token"}, "check-config", "--config", str(site.config))
    assert checked.returncode == 2
    assert "subscribers[1] (ops).webhook_url: environment variable SLACK_WEBHOOK_URL is not set" in checked.stderr


async def test_run_still_stops_on_its_own_gates_errors(site: Site, tmp_path: Path) -> None:
    """A shell subscriber that gates the job is the job's business: its missing secret stops it, named."""
    gate = {"name": "net-check", "kind": "shell", "on": ["CONDITION_SNAPSHOT_START"], "error_behavior": "ON_ERROR_CANCEL",
            "command": "true", "env": {"TOKEN": "env:NET_CHECK_TOKEN"}}
    site.configure([jsonl_sub(site), SLACK_ON_ENV, gate])
    add_jobs(site, [{"name": "nightly", "repository": "MyRepository", "backup": mark("backup")}])
    env = without("SLACK_WEBHOOK_URL", "NET_CHECK_TOKEN", MARKS=str(tmp_path))
    ran = await run_cli_in(env, "run", "nightly", "--config", str(site.config), "--timeout", "0.5")
    assert ran.returncode == 2
    assert "subscribers[2] (net-check).env.TOKEN: environment variable NET_CHECK_TOKEN is not set" in ran.stderr
    assert "SLACK" not in ran.stderr and not (tmp_path / "backup").exists()


# -- 3. a failure message says why ------------------------------------------------------------------

async def test_a_failed_backup_message_says_why(site: Site, tmp_path: Path) -> None:
    site.configure([jsonl_sub(site)])
    add_jobs(site, [{"name": "nightly", "repository": "MyRepository",
                     "backup": "echo 'Creating archive'; echo 'Repository /srv/borg/main does not exist.' >&2; exit 2"}])
    ran = await run_cli("run", "nightly", "--config", str(site.config), "--timeout", "0.5")
    assert ran.returncode == 1
    finished = next(e for e in spooled_events(site) if e["type"] == "backup.job.finished")
    assert finished["data"]["error"] == "backup failed: exit status 2: Repository /srv/borg/main does not exist."
    text = render_default(parse_event(finished))
    assert text.split("\n")[:4] == [
        "❌ Backup Job Failed - Backup Error", "", "Backup job for 'MyRepository' failed during backup process.",
        "Error: backup failed: exit status 2: Repository /srv/borg/main does not exist."]


# -- 8. the small ones ---------------------------------------------------------------------------------

async def test_a_boolean_in_a_command_is_true_or_false(site: Site) -> None:
    site.configure([jsonl_sub(site)])
    say = {"name": "Say", "command": 'echo "failed={{ job.failed }} critical={{ task.critical }}"', "run_on_job_failure": True}
    add_jobs(site, [{"name": "good", "repository": "R", "backup": "true", "post_hooks": [say]},
                    {"name": "bad", "repository": "R", "backup": "false", "post_hooks": [say]}])
    for job, failed in (("good", "false"), ("bad", "true")):
        await run_cli("run", job, "--config", str(site.config), "--timeout", "0.2")
        finished = next(e for e in spooled_events(site) if e["type"] == "backup.job.finished" and e["data"]["job"] == job)
        said = next(t for t in finished["data"]["tasks"] if t["name"] == "Say")
        assert said["output_tail"] == f"failed={failed} critical=false\n"


def test_systemd_timer_runs_a_job_by_name(tmp_path: Path) -> None:
    """docs/jobs.md's "from cron or a systemd timer": hookbus-run@NAME.timer starts hookbus-run@NAME.service."""
    units = Path(__file__).resolve().parent.parent / "config" / "systemd"
    service, timer = (units / "hookbus-run@.service").read_text(), (units / "hookbus-run@.timer").read_text()
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart=").replace("%i", "nightly"))
    assert argv[0].endswith("/hookbus")
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.job, args.job_type) == ("run", "nightly", "scheduled")
    assert "Type=oneshot" in service and "HOOKBUS_CONFIG=" in service
    assert "OnCalendar=" in timer and "Persistent=true" in timer and "WantedBy=timers.target" in timer
    if shutil.which("systemd-analyze") is None:
        return
    for unit in ("service", "timer"):  # an instance of each, as systemctl would load it
        (tmp_path / f"hookbus-run@nightly.{unit}").write_text((units / f"hookbus-run@.{unit}").read_text())
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", "hookbus-run@nightly.service",
                             "hookbus-run@nightly.timer"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    problems = [line for line in (verify.stdout + verify.stderr).splitlines()
                if line.strip() and "/usr/local/bin/hookbus is not executable" not in line]
    assert not problems, problems


# -- 5. a Backrest (Go) template gets a hint ----------------------------------------------------------

async def test_a_go_template_is_refused_with_the_jinja2_way_to_write_it(site: Site) -> None:
    slack = {"name": "ops", "kind": "slack", "webhook_url": "https://hooks.slack.com/services/T/B/x",
             "template": "{{ if .Error -}}❌ {{ .Plan }} failed: {{ .Error }}{{ end }}"}
    site.configure([jsonl_sub(site), slack])
    checked = await run_cli("check-config", "--config", str(site.config))
    assert checked.returncode == 2
    assert ("subscribers[1] (ops).template: this looks like a Go template (Backrest's syntax); hookbus templates are "
            "Jinja2: write {{ data.error }} instead of {{ .Error }}, {% if … %}…{% endif %} instead of "
            "{{ if … }}…{{ end }}; see the table \"From Backrest's template words\" in docs/backrest.md") in checked.stderr
    assert "'if' is undefined" not in checked.stderr


async def test_data_error_on_a_task_event_says_where_the_text_is(site: Site) -> None:
    hook = {"name": "on-error", "kind": "shell", "on": ["CONDITION_SNAPSHOT_ERROR"],
            "command": 'echo "failed: {{ data.error }}"'}
    site.configure([jsonl_sub(site), hook])
    checked = await run_cli("check-config", "--config", str(site.config))
    assert checked.returncode == 2
    assert "has no attribute 'error'; on a task event (backup.task.finished) the text is in data.task.message: " \
           "did you mean data.task.message?" in checked.stderr, checked.stderr
    hook["command"] = 'echo "failed: {{ data.task.message }}"'
    site.configure([jsonl_sub(site), hook])
    assert (await run_cli("check-config", "--config", str(site.config))).returncode == 0
