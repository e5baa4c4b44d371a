"""The `shell` subscriber: Backrest's conditions and error behaviours, templated
commands whose substituted values are always shell-quoted, and start hooks
that cancel a job run by `hookbus run`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from hookbus.bus.events.event import Event
from hookbus.bus.settings import ConfigError
from hookbus.config import build_config
from hookbus.subscribers import DeliveryError, load_subscriber_config
from hookbus.subscribers.shell import CONDITIONS, ShellSubscriber

from .conftest import Site, http_ready, local_site, read_jsonl, wait_for
from .test_jobs import add_jobs, spooled_events
from .test_process import jsonl_sub, run_cli


def shell_config(**keys: Any) -> Any:
    return load_subscriber_config({"name": "hook", "kind": "shell", "command": "true", **keys}, 0)


def task_event(type_: str, kind: str, status: str, warning: bool | None = None, **data: Any) -> Event:
    task = {"kind": kind, "status": status, **({"warning": warning} if warning is not None else {})}
    return Event(id="e", source="test://shell", type=type_, data={"job_id": "j", "task": task, **data})


@pytest.mark.parametrize(("condition", "event", "matches"), [
    ("CONDITION_SNAPSHOT_START", task_event("backup.task.started", "backup", "running"), True),
    ("CONDITION_SNAPSHOT_START", task_event("backup.task.started", "prune", "running"), False),
    ("CONDITION_SNAPSHOT_START", task_event("backup.task.finished", "backup", "completed"), False),
    ("CONDITION_SNAPSHOT_END", task_event("backup.task.finished", "backup", "failed"), True),
    ("CONDITION_SNAPSHOT_END", task_event("backup.task.finished", "backup", "skipped"), True),
    ("CONDITION_SNAPSHOT_SUCCESS", task_event("backup.task.finished", "backup", "completed"), True),
    ("CONDITION_SNAPSHOT_SUCCESS", task_event("backup.task.finished", "backup", "failed"), False),
    ("CONDITION_SNAPSHOT_ERROR", task_event("backup.task.finished", "backup", "failed"), True),
    ("CONDITION_SNAPSHOT_WARNING", task_event("backup.task.finished", "backup", "warning"), True),
    ("CONDITION_SNAPSHOT_WARNING", task_event("backup.task.finished", "backup", "completed", warning=True), True),
    ("CONDITION_SNAPSHOT_SUCCESS", task_event("backup.task.finished", "backup", "completed", warning=True), False),
    ("CONDITION_SNAPSHOT_WARNING", task_event("backup.task.finished", "backup", "completed"), False),
    ("CONDITION_SNAPSHOT_SKIPPED", task_event("backup.task.finished", "backup", "skipped"), True),
    ("CONDITION_PRUNE_ERROR", task_event("backup.task.finished", "prune", "failed"), True),
    ("CONDITION_PRUNE_ERROR", task_event("backup.task.finished", "backup", "failed"), False),
    ("CONDITION_CHECK_START", task_event("backup.task.started", "check", "running"), True),
    ("CONDITION_FORGET_SUCCESS", task_event("backup.task.finished", "forget", "completed"), True),
    ("CONDITION_ANY_ERROR", task_event("backup.task.finished", "hook", "failed"), True),
    ("CONDITION_ANY_ERROR", task_event("backup.task.finished", "hook", "completed"), False),
    ("CONDITION_ANY_ERROR", Event(id="e", source="s", type="backup.job.finished", data={"outcome": "failed"}), True),
    ("CONDITION_ANY_ERROR", Event(id="e", source="s", type="backup.job.finished", data={"outcome": "warning"}), False),
])
def test_backrest_conditions_map_onto_events(condition: str, event: Event, matches: bool) -> None:
    _, predicate = CONDITIONS[condition]
    assert predicate(event) is matches
    assert ShellSubscriber(shell_config(on=[condition])).matches(event) is matches


@pytest.mark.parametrize(("keys", "error"), [
    ({"on": ["CONDITION_SNAPSHOT_START", "CONDITION_BACKUP_DONE"]},
     "subscribers[0] (hook).on[1]: Value error, unknown condition 'CONDITION_BACKUP_DONE'"),
    ({"on": ["CONDITION_SNAPSHOT_END"], "events": ["backup.*"]}, "give either `on` (Backrest conditions) or `events`"),
    ({"on": ["CONDITION_SNAPSHOT_END"], "error_behavior": "ON_ERROR_CANCEL"},
     "subscribers[0] (hook).error_behavior: Value error, ON_ERROR_CANCEL cancels a job before something starts"),
    ({"error_behavior": "ON_ERROR_SOMETIMES"}, "subscribers[0] (hook).error_behavior: Input should be 'ON_ERROR_IGNORE'"),
    ({"command": "echo {{ data.nope.deeper }}"}, "subscribers[0] (hook).command: Value error, template error:"),
    ({"command": "echo {% if %}"}, "subscribers[0] (hook).command: Value error, template error:"),
    ({"on": []}, "subscribers[0] (hook).on: Value error, name at least one condition"),
    ({"colour": "red"}, "subscribers[0] (hook).colour: unknown key"),
])
def test_config_errors_name_the_key(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as info:
        shell_config(**keys)
    assert error in str(info.value)


def test_on_sets_the_event_types_and_retry_behaviours_set_the_pace() -> None:
    config = shell_config(on=["CONDITION_SNAPSHOT_ERROR", "CONDITION_ANY_ERROR"], error_behavior="ON_ERROR_RETRY_1MINUTE")
    assert config.events == ["backup.*.finished", "backup.task.finished"]
    assert (config.retry.initial_delay, config.retry.max_delay) == (60, 60)
    ten = shell_config(error_behavior="ON_ERROR_RETRY_10MINUTES")
    assert (ten.retry.initial_delay, ten.retry.max_delay) == (600, 600)
    own = shell_config(error_behavior="ON_ERROR_RETRY_1MINUTE", retry={"attempts": 3})
    assert own.retry.attempts == 3 and own.retry.max_delay == 300  # a `retry` of one's own wins


@pytest.mark.parametrize(("behavior", "permanent", "retry_after"), [
    ("ON_ERROR_FATAL", True, None),
    ("ON_ERROR_CANCEL", True, None),
    ("ON_ERROR_RETRY_1MINUTE", False, 60.0),
    ("ON_ERROR_RETRY_10MINUTES", False, 600.0),
    ("ON_ERROR_RETRY_EXPONENTIAL_BACKOFF", False, None),
])
async def test_error_behaviours(behavior: str, permanent: bool, retry_after: float | None) -> None:
    events = ["backup.task.started"] if behavior == "ON_ERROR_CANCEL" else None
    sub = ShellSubscriber(shell_config(command="echo boom >&2; exit 3", error_behavior=behavior, events=events))
    with pytest.raises(DeliveryError) as info:
        await sub.handle(task_event("backup.task.started", "backup", "running"))
    assert info.value.permanent is permanent and info.value.retry_after == retry_after
    assert str(info.value) == "command exit status 3: boom"


async def test_ignore_logs_and_moves_on(caplog: pytest.LogCaptureFixture) -> None:
    sub = ShellSubscriber(shell_config(command="exit 4"))
    await sub.handle(task_event("backup.task.finished", "backup", "failed"))
    assert "command exit status 4 (ignored: ON_ERROR_IGNORE)" in caplog.text


async def test_command_gets_the_event_on_stdin_and_in_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sub = ShellSubscriber(shell_config(command=f"cat > {out}.json; env | grep -E '^(HOOKBUS|BORGITORY)_' | sort > {out}.env"))
    event = Event(id="e-9", source="test://s", type="backup.task.finished", subject="Repo", seq=12,
                  data={"job_id": "j-1", "job": "nightly", "repository": "Repo",
                        "task": {"index": 2, "name": "backup", "kind": "backup", "status": "failed"}})
    await sub.handle(event)
    assert orjson.loads(Path(f"{out}.json").read_bytes())["data"]["task"]["index"] == 2
    env = dict(line.split("=", 1) for line in Path(f"{out}.env").read_text().splitlines())
    assert env["HOOKBUS_EVENT_TYPE"] == "backup.task.finished" and env["HOOKBUS_EVENT_SEQ"] == "12"
    assert env["HOOKBUS_JOB_ID"] == "j-1" and env["HOOKBUS_TASK_STATUS"] == "failed"
    assert env["BORGITORY_REPOSITORY_ID"] == "Repo" and env["BORGITORY_TASK_INDEX"] == "2"


async def test_an_event_gated_by_hookbus_run_is_not_run_twice(tmp_path: Path) -> None:
    sub = ShellSubscriber(shell_config(command=f"touch {tmp_path}/ran", on=["CONDITION_SNAPSHOT_START"],
                                       error_behavior="ON_ERROR_CANCEL"))
    await sub.handle(task_event("backup.task.started", "backup", "running", gated_by=["hook"]))
    assert not (tmp_path / "ran").exists()
    await sub.handle(task_event("backup.task.started", "backup", "running"))
    assert (tmp_path / "ran").exists()


HOSTILE = "a $(touch {pwned}) `touch {pwned}` ; touch {pwned} ' \" \\ $HOME\nsecond line && rm -rf {pwned}"


async def test_event_data_is_printed_literally_never_executed(site: Site, procs: Any, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    out = tmp_path / "out.txt"
    site.configure([jsonl_sub(site), {
        "name": "printer", "kind": "shell", "events": ["backup.log"],
        "command": f"printf '%s|' {{{{ data.message }}}} {{{{ subject }}}} {{{{ data.job_id }}}} >> {out}"}])
    procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    message = HOSTILE.format(pwned=pwned)
    subject = f"Repo'$(touch {pwned})"
    done = await run_cli("emit", "backup.log", "--data", orjson.dumps({"job_id": "`id`;", "message": message}).decode(),
                         "--subject", subject, "--config", str(site.config))
    assert done.returncode == 0, done.stderr
    await wait_for(lambda: out.exists() and out.read_text().count("|") >= 3, 15, "the hook's output")
    assert out.read_text() == f"{message}|{subject}|`id`;|"
    assert not pwned.exists()


async def test_healthcheck_template_pings_fail_only_on_error(site: Site, procs: Any) -> None:
    """Backrest's example: one hook on CONDITION_SNAPSHOT_END whose URL ends in /fail only on error."""
    paths: list[str] = []

    async def ping(request: web.Request) -> web.Response:
        paths.append(request.path)
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_post("/{tail:.*}", ping)
    async with local_site(app) as url:
        base = f"{url}/your-uuid"
        site.configure([jsonl_sub(site), {
            "name": "hc", "kind": "shell", "on": ["CONDITION_SNAPSHOT_END"],
            "command": "{% if is_error(event) -%}\ncurl -fsS --retry 3 -X POST " + base + "/fail\n{% else -%}\n"
                       "curl -fsS --retry 3 -X POST " + base + "\n{% endif -%}",
        }])
        add_jobs(site, [{"name": "good", "repository": "R", "backup": "true"},
                        {"name": "bad", "repository": "R", "backup": "exit 2"}])
        procs("serve", "--config", str(site.config))
        await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
        assert (await run_cli("run", "good", "--config", str(site.config))).returncode == 0
        await wait_for(lambda: len(paths) >= 1, 15, "the success ping")
        assert (await run_cli("run", "bad", "--config", str(site.config))).returncode == 1
        await wait_for(lambda: len(paths) >= 2, 15, "the failure ping")
        assert paths == ["/your-uuid", "/your-uuid/fail"]


async def test_fatal_failure_becomes_an_event_notifications_see(site: Site, procs: Any) -> None:
    site.configure([jsonl_sub(site), {"name": "strict", "kind": "shell", "on": ["CONDITION_SNAPSHOT_ERROR"],
                                      "command": "echo cannot page anyone; exit 5", "error_behavior": "ON_ERROR_FATAL"}])
    add_jobs(site, [{"name": "bad", "repository": "R", "backup": "exit 2"}])
    procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    await run_cli("run", "bad", "--job-id", "bad-1", "--config", str(site.config))
    audit = site.root / "audit.jsonl"
    failed = await wait_for(lambda: [e for e in read_jsonl(audit) if e["type"] == "hookbus.delivery.failed"], 20,
                            "hookbus.delivery.failed")
    data = failed[0]["data"]
    assert data["subscriber"] == "strict" and data["event_type"] == "backup.task.finished" and data["job_id"] == "bad-1"
    assert data["error"] == "command exit status 5: cannot page anyone" and data["attempts"] == 1


async def caught_up(site: Site, name: str) -> bool:
    async with aiohttp.ClientSession() as session, session.get(f"{site.url}/api/subscribers") as resp:
        body = await resp.json()
    return any(s["name"] == name and s["cursor"] == body["head"] > 0 for s in body["subscribers"])


@pytest.mark.parametrize(("behavior", "outcome", "backup"), [
    ("ON_ERROR_CANCEL", "cancelled", ("skipped", "Cancelled by shell hook 'net-check' exit status 1")),
    ("ON_ERROR_FATAL", "failed", ("failed", "shell hook 'net-check' exit status 1 (ON_ERROR_FATAL)")),
])
async def test_start_hook_cancels_or_fails_a_job(site: Site, procs: Any, tmp_path: Path, behavior: str, outcome: str,
                                                backup: tuple[str, str]) -> None:
    runs = tmp_path / "runs"
    site.configure([jsonl_sub(site), {"name": "net-check", "kind": "shell", "on": ["CONDITION_SNAPSHOT_START"],
                                      "command": f"echo run >> {runs}; echo Internet connection is down; exit 1",
                                      "error_behavior": behavior}])
    add_jobs(site, [{"name": "nightly", "repository": "R", "backup": f"touch {tmp_path}/backup-ran", "prune": "true",
                     "pre_hooks": [{"name": "prepare", "command": "true"}],
                     "post_hooks": [{"name": "cleanup", "command": "true", "run_on_job_failure": True}]}])
    procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    done = await run_cli("run", "nightly", "--job-id", "gated-1", "--config", str(site.config))
    assert done.returncode == 1, done.stdout + done.stderr
    assert not (tmp_path / "backup-ran").exists()
    audit = site.root / "audit.jsonl"
    finished = await wait_for(lambda: [e for e in read_jsonl(audit) if e["type"] == "backup.job.finished"], 15, "job end")
    data = finished[0]["data"]
    tasks = {t["name"]: (t["status"], t["message"]) for t in data["tasks"]}
    assert data["outcome"] == outcome and tasks["backup"] == backup
    assert tasks["cleanup"] == ("completed", "exit status 0 (run on job failure)")
    if behavior == "ON_ERROR_CANCEL":
        assert tasks["prune"] == ("skipped", "Task skipped because the job was cancelled")
    else:
        assert tasks["prune"] == ("skipped", "Task skipped due to critical task failure")
    await wait_for(lambda: caught_up(site, "net-check"), 15, "the shell subscriber to pass every event of the job")
    assert runs.read_text() == "run\n"  # run once, by `hookbus run`; the subscriber skipped it


async def test_a_job_run_offline_still_runs_its_start_hooks(site: Site, tmp_path: Path) -> None:
    site.configure([jsonl_sub(site), {"name": "gate", "kind": "shell", "events": ["backup.job.started"],
                                      "command": "exit 0", "error_behavior": "ON_ERROR_CANCEL"}])
    add_jobs(site, [{"name": "nightly", "repository": "R", "backup": "true"}])
    done = await run_cli("run", "nightly", "--timeout", "0", "--config", str(site.config))
    assert done.returncode == 0 and "shell hook gate (ON_ERROR_CANCEL): exit status 0" in done.stdout
    started = next(e for e in spooled_events(site) if e["type"] == "backup.job.started")
    assert started["data"]["gated_by"] == ["gate"]


def test_check_config_accepts_the_backrest_examples() -> None:
    config = build_config({"subscribers": [
        {"name": "internet", "kind": "shell", "on": ["CONDITION_SNAPSHOT_START"], "error_behavior": "ON_ERROR_CANCEL",
         "command": "#!/bin/bash\nif ping -q -c 1 -W 1 google.com >/dev/null; then\n  exit 0\nelse\n  exit 1\nfi\n"},
        {"name": "hc", "kind": "shell", "on": ["CONDITION_SNAPSHOT_END"],
         "command": "#!/bin/bash\n{% if is_error(event) -%}\ncurl -fsS https://hc-ping.com/uuid/fail\n{% else -%}\n"
                    "curl -fsS https://hc-ping.com/uuid\n{% endif -%}"},
    ]}, "test")
    # Backrest's conditions become the event types each hook listens to.
    assert [s.events for s in config.subscribers] == [["backup.task.started"], ["backup.task.finished"]]


@pytest.mark.parametrize("condition", sorted(CONDITIONS))
def test_hookbus_test_gets_a_sample_that_meets_each_condition(condition: str) -> None:
    from hookbus.bus.notify.templates import SAMPLES

    sub = ShellSubscriber(shell_config(on=[condition], command='echo "type: {{ type }}"'))
    sample = sub.sample(SAMPLES["backup.job.finished"])
    assert sub.matches(sample)
    assert sub.preview(sample).splitlines()[-3:] == [
        'echo "type: ${HOOKBUS_VALUE_1}"', "with the template's values in the environment:",
        f"  HOOKBUS_VALUE_1={sample.type!r}"]


def test_preview_says_when_nothing_would_run() -> None:
    from hookbus.bus.notify.templates import SAMPLES

    sub = ShellSubscriber(shell_config(on=["CONDITION_PRUNE_ERROR"]))
    with pytest.raises(DeliveryError, match="does not meet this hook's conditions"):
        sub.preview(SAMPLES["backup.task.finished"])
