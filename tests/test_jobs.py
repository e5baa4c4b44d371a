"""`hookbus run`: the seed's four execution flows with real processes, hooks as
process groups, the spool when the broker is down, and the job history API."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from hookbus.bus.events.event import parse_event
from hookbus.bus.jobs.command import run_command
from hookbus.bus.jobs.process import group_alive
from hookbus.bus.jobs.runner import SKIP_CRITICAL_EXCEPTION, SKIP_CRITICAL_HOOK, SKIP_CRITICAL_TASK
from hookbus.bus.notify.messages import render_default

from .conftest import HOOKBUS, Site, http_ready, read_jsonl, toml_value, wait_for
from .test_process import jsonl_sub, run_cli


def jobs_toml(jobs: list[dict[str, Any]]) -> str:
    """[[jobs]] tables with their [[jobs.pre_hooks]] / [[jobs.post_hooks]]."""
    lines: list[str] = []
    for job in jobs:
        lines += ["", "[[jobs]]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in job.items() if k not in ("pre_hooks", "post_hooks")]
        for key in ("pre_hooks", "post_hooks"):
            for hook in job.get(key, []):
                lines += ["", f"[[jobs.{key}]]"] + [f"{k} = {toml_value(v)}" for k, v in hook.items()]
    return "\n".join(lines) + "\n"


def add_jobs(site: Site, jobs: list[dict[str, Any]]) -> None:
    site.config.write_text(site.config.read_text() + jobs_toml(jobs))


def mark(name: str, then: str = "") -> str:
    """A hook command that leaves a marker file, then does `then`."""
    return f'echo ran >> "$MARKS/{name}"' + (f"; {then}" if then else "")


def seed_job(name: str, *, pre2: dict[str, Any] | None = None, backup: str = mark("backup"),
             post1_on_failure: bool = False, pre1_fails: bool = False) -> dict[str, Any]:
    """The seed's 7-task job: 2 pre-hooks, backup, prune, 2 post-hooks, notification."""
    return {
        "name": name, "repository": "MyRepository", "backup": backup, "prune": mark("prune"),
        "pre_hooks": [
            {"name": "Database Dump", "command": mark("pre1", "exit 3" if pre1_fails else ""), "critical": True},
            pre2 or {"name": "Stop Services", "command": mark("pre2")},
        ],
        "post_hooks": [
            {"name": "Restart Services", "command": mark("post1"), "run_on_job_failure": post1_on_failure},
            {"name": "Health Check", "command": mark("post2"), "run_on_job_failure": True},
        ],
    }


FLOWS: dict[str, dict[str, Any]] = {
    "all_successful": {
        "job": seed_job("flow"),
        "statuses": ["completed"] * 7,
        "messages": ["exit status 0"] * 6 + ["backup.job.finished published"],
        "ran": {"pre1", "pre2", "backup", "prune", "post1", "post2"},
        "outcome": "success", "reason": None, "failed_hook": None, "failed_tasks": [],
        "counts": {"completed": 7, "failed": 0, "skipped": 0, "total": 7},
        "exit": 0, "result": "Result: ✅ Job Completed Successfully",
    },
    "critical_pre_hook_failure": {
        "job": seed_job("flow", pre1_fails=True),
        "statuses": ["failed", "skipped", "skipped", "skipped", "skipped", "completed", "completed"],
        "messages": ["exit status 3"] + [SKIP_CRITICAL_HOOK] * 4 + ["exit status 0 (run on job failure)",
                                                                     "backup.job.finished published"],
        "ran": {"pre1", "post2"},
        "outcome": "failed", "reason": "critical_hook", "failed_hook": "Database Dump", "failed_tasks": ["hook"],
        "counts": {"completed": 2, "failed": 1, "skipped": 4, "total": 7},
        "exit": 1, "result": "Result: ❌ Job Failed - Critical Hook Error",
    },
    "backup_failure": {
        "job": seed_job("flow", backup=mark("backup", "exit 2"), post1_on_failure=True),
        "statuses": ["completed", "completed", "failed", "skipped", "completed", "completed", "completed"],
        "messages": ["exit status 0", "exit status 0", "exit status 2", SKIP_CRITICAL_TASK,
                     "exit status 0 (run on job failure)", "exit status 0 (run on job failure)",
                     "backup.job.finished published"],
        "ran": {"pre1", "pre2", "backup", "post1", "post2"},
        "outcome": "failed", "reason": "backup_error", "failed_hook": None, "failed_tasks": ["backup"],
        "counts": {"completed": 5, "failed": 1, "skipped": 1, "total": 7},
        "exit": 1, "result": "Result: ❌ Job Failed - Backup Error",
    },
    "non_critical_hook_failure": {
        "job": seed_job("flow", pre2={"name": "Log Rotation", "command": mark("pre2", "exit 1")}),
        "statuses": ["completed", "failed", "completed", "completed", "completed", "completed", "completed"],
        "messages": ["exit status 0", "exit status 1"] + ["exit status 0"] * 4 + ["backup.job.finished published"],
        "ran": {"pre1", "pre2", "backup", "prune", "post1", "post2"},
        "outcome": "warning", "reason": "task_failed", "failed_hook": None, "failed_tasks": ["hook"],
        "counts": {"completed": 6, "failed": 1, "skipped": 0, "total": 7},
        "exit": 0, "result": "Result: ⚠️  Job Completed with Warnings",
    },
}


@pytest.mark.parametrize("flow", list(FLOWS))
async def test_seed_execution_flows(site: Site, procs: Any, tmp_path: Path, flow: str) -> None:
    want = FLOWS[flow]
    marks = tmp_path / "marks"
    marks.mkdir()
    site.configure([jsonl_sub(site)])
    add_jobs(site, [{**want["job"], "env": {"MARKS": str(marks)}}])
    procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")

    done = await run_cli("run", "flow", "--job-id", f"job-{flow}", "--config", str(site.config))
    assert done.returncode == want["exit"], done.stdout + done.stderr
    assert want["result"] in done.stdout and "Traceback" not in done.stderr
    assert {p.name for p in marks.iterdir()} == want["ran"]  # what ran, and what did not

    audit = site.root / "audit.jsonl"
    await wait_for(lambda: any(e["type"] == "backup.job.finished" for e in read_jsonl(audit)), 15, "backup.job.finished")
    events = [e for e in read_jsonl(audit) if e["data"].get("job_id") == f"job-{flow}"]
    finished = events[-1]
    assert finished["type"] == "backup.job.finished" and finished["subject"] == "MyRepository"
    data = finished["data"]
    assert [t["status"] for t in data["tasks"]] == want["statuses"]
    assert [t["message"] for t in data["tasks"]] == want["messages"]
    assert [t["kind"] for t in data["tasks"]] == ["hook", "hook", "backup", "prune", "hook", "hook", "notification"]
    for key in ("outcome", "reason", "failed_hook", "failed_tasks", "counts"):
        assert data[key] == want[key], key
    assert set(data) >= {"job_id", "job", "repository", "error", "started_at", "finished_at", "duration_s", "tasks"}
    assert (data["error"] is None) == (want["outcome"] == "success")

    # every task that ran published started and finished; a skipped task only finished
    types = [(e["type"], e["data"].get("task", {}).get("index")) for e in events]
    assert types[0] == ("backup.job.started", None)
    for index, status in enumerate(want["statuses"]):
        assert (("backup.task.started", index) in types) == (status != "skipped")
        assert ("backup.task.finished", index) in types
    assert len(events) == 2 + 7 + sum(s != "skipped" for s in want["statuses"])

    async with aiohttp.ClientSession() as session, session.get(f"{site.url}/api/jobs/job-{flow}") as resp:
        assert resp.status == 200
        job = await resp.json()
    assert job["status"] == want["outcome"] and job["counts"] == want["counts"]
    assert [(t["name"], t["task_type"], t["status"], t["message"]) for t in job["tasks"]] == [
        (t["name"], t["kind"], t["status"], t["message"]) for t in data["tasks"]]


async def test_a_backup_that_cannot_start_skips_with_the_exception_message(site: Site, tmp_path: Path) -> None:
    site.configure([jsonl_sub(site)])
    add_jobs(site, [{"name": "broken", "repository": "R", "backup": {"command": "true", "cwd": str(tmp_path / "gone")},
                     "prune": "true"}])
    done = await run_cli("run", "broken", "--timeout", "0", "--config", str(site.config))
    assert done.returncode == 1
    assert "could not start: cwd" in done.stdout and SKIP_CRITICAL_EXCEPTION in done.stdout


def spooled_events(site: Site) -> list[dict[str, Any]]:
    return [e for f in sorted((site.root / "var" / "spool").glob("*.jsonl")) for e in read_jsonl(f)]


async def test_hook_environment_shebang_cwd_env_and_output_tail(site: Site, tmp_path: Path) -> None:
    site.configure([jsonl_sub(site)])
    work = tmp_path / "work"
    work.mkdir()
    add_jobs(site, [{
        "name": "ctx", "repository": "MyRepository", "backup": "true", "env": {"FROM_JOB": "job-level"},
        "pre_hooks": [
            {"name": "env", "command": "env | grep -E '^(HOOKBUS|BORGITORY)_|^FROM_|^OWN=' | sort", "env": {"OWN": "hook-level"}},
            {"name": "python", "command": "#!/usr/bin/env python3\nimport os, sys\nprint('py', sys.version_info[0], os.environ['BORGITORY_TASK_INDEX'])"},
            {"name": "cwd", "command": "pwd", "cwd": str(work)},
            {"name": "loud", "command": "for i in $(seq 1 20000); do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; done"},
        ],
    }])
    done = await run_cli("run", "ctx", "--job-id", "ctx-1", "--job-type", "scheduled", "--timeout", "0",
                         "--config", str(site.config), env={"HOOKBUS_INHERITED_CHECK": "yes"})
    assert done.returncode == 0, done.stdout + done.stderr
    finished = [e for e in spooled_events(site) if e["type"] == "backup.task.finished"]
    out = {e["data"]["task"]["name"]: e["data"]["task"]["output_tail"] for e in finished}
    env = dict(line.split("=", 1) for line in out["env"].splitlines())
    assert env["HOOKBUS_JOB_ID"] == "ctx-1" and env["HOOKBUS_JOB"] == "ctx"
    assert env["HOOKBUS_REPOSITORY"] == env["BORGITORY_REPOSITORY_ID"] == "MyRepository"
    assert env["HOOKBUS_TASK_INDEX"] == env["BORGITORY_TASK_INDEX"] == "0"
    assert env["HOOKBUS_JOB_TYPE"] == env["BORGITORY_JOB_TYPE"] == "scheduled"
    assert env["HOOKBUS_INHERITED_CHECK"] == "yes"  # the environment is inherited
    assert env["FROM_JOB"] == "job-level" and env["OWN"] == "hook-level"
    assert out["python"] == "py 3 1\n"  # the #! line picked the interpreter
    assert out["cwd"] == f"{work}\n"
    loud = out["loud"]
    assert loud.startswith("…[cut: ") and loud.endswith("line-20000-" + "x" * 34 + "\n")
    assert len(loud.encode()) < 64 * 1024 + 100  # the tail is capped


def live_sleepers(tag: str) -> list[str]:
    """Processes still alive (not zombies) whose command line holds `tag`."""
    ps = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if tag in line and not line.split()[1].startswith("Z")
            and "ps -eo" not in line]


async def test_hook_timeout_stops_the_whole_process_group(site: Site) -> None:
    tag = f"98{os.getpid() % 10000:04d}1"
    site.configure([jsonl_sub(site)])
    add_jobs(site, [{"name": "slow", "repository": "R", "backup": "true", "pre_hooks": [
        {"name": "Hangs", "command": f"sleep {tag}0 & echo started; sleep {tag}1", "timeout": 2}]}])
    started = time.monotonic()
    done = await run_cli("run", "slow", "--timeout", "0", "--config", str(site.config))
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr  # a non-critical hook: completed with warnings
    assert "timed out after 2s; its process group was stopped" in done.stdout
    assert took < 10, f"the job took {took:.1f}s"
    assert live_sleepers(tag) == []
    task = next(e for e in spooled_events(site) if e["type"] == "backup.task.finished")["data"]["task"]
    assert task["status"] == "failed" and task["output_tail"] == "started\n"  # the output so far is kept


async def test_a_group_that_ignores_sigterm_gets_sigkill() -> None:
    tag = f"97{os.getpid() % 10000:04d}2"
    started = time.monotonic()
    result = await run_command(f"trap '' TERM; (trap '' TERM; sleep {tag}) & echo up; sleep {tag}",
                               timeout=1, grace=0.5)
    assert result.timed_out and result.exit_code is None and result.output == "up\n"
    assert time.monotonic() - started < 5
    assert live_sleepers(tag) == []


async def test_cancelling_a_hook_stops_its_group_and_still_raises() -> None:
    tag = f"96{os.getpid() % 10000:04d}3"
    task = asyncio.create_task(run_command(f"sleep {tag} & sleep {tag}", timeout=60, grace=1))
    await wait_for(lambda: live_sleepers(tag), 5, "the hook to start")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert live_sleepers(tag) == []


async def test_a_missing_interpreter_is_a_clear_failure() -> None:
    result = await run_command("#!/no/such/interpreter\necho hi")
    assert not result.ok and result.describe() == "could not start: No such file or directory: /no/such/interpreter"


async def test_broker_down_the_job_runs_and_its_events_arrive_once_it_is_up(site: Site, procs: Any, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    site.configure([jsonl_sub(site)])
    add_jobs(site, [{**seed_job("nightly"), "env": {"MARKS": str(marks)}}])
    first = await run_cli("run", "nightly", "--job-id", "offline-1", "--timeout", "0.5", "--config", str(site.config))
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(list(marks.iterdir())) == 6  # the job ran without a broker
    spool = site.root / "var" / "spool" / "offline-1-nightly.jsonl"
    assert "could not be reached; 16 event(s)" in first.stderr and str(spool) in first.stderr
    assert len(read_jsonl(spool)) == 16
    # the notification says it was spooled, not published
    assert ("7. notification                   ✅ completed: backup.job.finished spooled, not yet published: "
            "the broker could not be reached") in first.stdout
    assert "published\n" not in first.stdout

    procs("serve", "--config", str(site.config))
    audit = site.root / "audit.jsonl"
    await wait_for(lambda: len(read_jsonl(audit)) >= 16, 20, "the spooled events in the jsonl file")
    await wait_for(lambda: not spool.exists(), 10, "the spool file to be deleted")
    events = read_jsonl(audit)
    assert events[0]["type"] == "backup.job.started" and events[-1]["type"] == "backup.job.finished"
    assert len(events) == 16 and len({(e["source"], e["id"]) for e in events}) == 16

    # with the broker up, the next run delivers live and leaves nothing in the spool
    second = await run_cli("run", "nightly", "--job-id", "online-2", "--config", str(site.config))
    assert second.returncode == 0 and "could not be reached" not in second.stderr
    assert "7. notification                   ✅ completed: backup.job.finished published\nResult: " in second.stdout
    assert not list((site.root / "var" / "spool").glob("*.jsonl"))
    await wait_for(lambda: len(read_jsonl(audit)) >= 32, 10, "the second run's events")


async def test_next_run_delivers_what_an_earlier_run_left(site: Site, procs: Any) -> None:
    """Across hosts the broker never sees this host's spool: the next run sends it."""
    site.configure([jsonl_sub(site)])
    add_jobs(site, [{"name": "quick", "repository": "R", "backup": "true"}])
    await run_cli("run", "quick", "--job-id", "left-1", "--timeout", "0", "--config", str(site.config))
    left = site.root / "var" / "spool" / "left-1-quick.jsonl"
    assert left.exists()
    # a broker with its own data_dir, as on another host
    other = site.root / "broker-host"
    broker_config = site.root / "broker.toml"
    broker_config.write_text(site.config.read_text().replace(str(site.root / "var"), str(other)))
    procs("serve", "--config", str(broker_config))
    await wait_for(lambda: http_ready(site.url), 20, "the broker")
    # this "host" has none of the broker's keys: it publishes with a credential from `hookbus grant`
    credential = site.root / "granted.credential"
    granted = await run_cli("grant", "publish", "--to", str(credential), "--config", str(broker_config))
    assert granted.returncode == 0, granted.stderr
    done = await run_cli("run", "quick", "--job-id", "next-2", "--config", str(site.config),
                         env={"HOOKBUS_CREDENTIAL": str(credential)})
    assert done.returncode == 0
    assert not left.exists()
    async with aiohttp.ClientSession() as session:
        for job_id in ("left-1", "next-2"):
            async with session.get(f"{site.url}/api/jobs/{job_id}") as resp:
                assert resp.status == 200 and (await resp.json())["status"] == "success"


async def test_sigterm_cancels_the_job_and_cleanup_hooks_still_run(site: Site, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    site.configure([jsonl_sub(site)])
    add_jobs(site, [{"name": "long", "repository": "R", "env": {"MARKS": str(marks)},
                     "backup": mark("backup", "sleep 600"), "prune": mark("prune"),
                     "post_hooks": [{"name": "Restart", "command": mark("post1")},
                                    {"name": "Cleanup", "command": mark("post2"), "run_on_job_failure": True}]}])
    proc = await asyncio.create_subprocess_exec(*HOOKBUS, "run", "long", "--timeout", "0", "--config", str(site.config),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    await wait_for(lambda: (marks / "backup").exists(), 20, "the backup to start")
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1, out.decode() + err.decode()
    assert {p.name for p in marks.iterdir()} == {"backup", "post2"}
    finished = next(e for e in spooled_events(site) if e["type"] == "backup.job.finished")["data"]
    assert finished["outcome"] == "cancelled" and finished["reason"] == "cancelled"
    statuses = {t["name"]: (t["status"], t["message"]) for t in finished["tasks"]}
    assert statuses["backup"] == ("failed", "cancelled; its process group was stopped")
    assert statuses["prune"] == ("skipped", "Task skipped because the job was cancelled")
    assert statuses["Cleanup"] == ("completed", "exit status 0 (run on job failure)")
    # the terminal and the notifiers say it in one text
    assert "Result: 🚫 Job Cancelled" in out.decode()
    event = parse_event(next(e for e in spooled_events(site) if e["type"] == "backup.job.finished"))
    assert render_default(event).startswith("🚫 Backup Job Cancelled\n")


async def test_templated_hook_commands_see_the_job_and_quote_values(site: Site) -> None:
    site.configure([jsonl_sub(site)])
    add_jobs(site, [{"name": "tpl", "repository": "Repo; touch /tmp/should-not-exist-$$", "backup": "false",
                     "post_hooks": [{"name": "ping", "run_on_job_failure": True,
                                     "command": "echo \"ping/uuid{% if job.failed %}/fail{% endif %} {{ job.repository }}\""}]}])
    done = await run_cli("run", "tpl", "--timeout", "0", "--config", str(site.config))
    assert done.returncode == 1
    ping = next(e for e in spooled_events(site) if e["type"] == "backup.task.finished"
                and e["data"]["task"]["name"] == "ping")["data"]["task"]
    assert ping["output_tail"] == "ping/uuid/fail Repo; touch /tmp/should-not-exist-$$\n"


@pytest.mark.parametrize(("job", "error"), [
    ({"name": "nightly", "repository": "R", "backup": "b", "pre_hooks": [{"name": "a", "command": "x"}, {"name": "b"}]},
     "jobs[0] (nightly).pre_hooks[1].command: Field required"),
    ({"name": "nightly", "repository": "R", "backup": "b", "pre_hooks": [{"name": "a", "command": "x", "run_on_job_failure": True}]},
     "jobs[0] (nightly).pre_hooks[0].run_on_job_failure: unknown key"),
    ({"name": "nightly", "repository": "R"}, "jobs[0] (nightly).backup: Field required"),
    ({"name": "nightly", "repository": "R", "backup": {"command": "b", "critical": False}},
     "jobs[0] (nightly).backup.critical: Input should be True"),
    ({"name": "nightly", "repository": "R", "backup": "b", "post_hooks": [{"name": "p", "command": "echo {{ job.nope }}"}]},
     "jobs[0] (nightly).post_hooks[0].command: Value error, template error: 'dict object' has no attribute 'nope'"),
    ({"name": "nightly", "repository": "R", "backup": "b", "pre_hooks": [{"name": "a", "command": "x", "timeout": 0}]},
     "jobs[0] (nightly).pre_hooks[0].timeout: Input should be greater than 0"),
])
async def test_job_config_errors_name_the_key(site: Site, job: dict[str, Any], error: str) -> None:
    site.configure([jsonl_sub(site)])
    add_jobs(site, [job])
    done = await run_cli("check-config", "--config", str(site.config))
    assert done.returncode == 2 and error in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


async def test_unknown_job_name_says_which_exist(site: Site) -> None:
    site.configure([jsonl_sub(site)])
    add_jobs(site, [{"name": "nightly", "repository": "R", "backup": "true"}])
    done = await run_cli("run", "weekly", "--config", str(site.config))
    assert done.returncode == 2 and "no job named 'weekly'" in done.stderr and "nightly" in done.stderr


async def test_job_history_from_other_sources_and_404(site: Site, procs: Any) -> None:
    """GET /api/jobs is built from the journal, whoever published the events."""
    site.configure([jsonl_sub(site)])
    procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    src = "borgitory://nas/jobs"
    batch = [
        {"specversion": "1.0", "id": "a1", "source": src, "type": "backup.job.started", "subject": "Photos",
         "data": {"job_id": "ext-7", "job": "photos", "repository": "Photos", "tasks": [
             {"index": 0, "name": "backup", "kind": "backup", "status": "pending"}]}},
        {"specversion": "1.0", "id": "a2", "source": src, "type": "backup.task.finished",
         "data": {"job_id": "ext-7", "task": {"index": 0, "name": "backup", "kind": "backup", "status": "completed",
                                              "output_tail": "1.2 GiB"}}},
    ]
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{site.url}/events", data=orjson.dumps(batch),
                                headers={"Content-Type": "application/cloudevents-batch+json"}) as resp:
            assert resp.status == 202
        async with session.get(f"{site.url}/api/jobs/ext-7") as resp:
            running = await resp.json()
        assert running["status"] == "running" and running["source"] == src and running["job"] == "photos"
        assert running["tasks"][0]["status"] == "completed" and running["tasks"][0]["task_type"] == "backup"
        done = {"specversion": "1.0", "id": "a3", "source": src, "type": "backup.job.finished", "subject": "Photos",
                "data": {"job_id": "ext-7", "outcome": "success"}}
        async with session.post(f"{site.url}/events", json=done) as resp:
            assert resp.status == 202
        async with session.get(f"{site.url}/api/jobs?job=photos") as resp:
            listed = (await resp.json())["jobs"]
        assert [(j["job_id"], j["status"], j["tasks_total"]) for j in listed] == [("ext-7", "success", 1)]
        async with session.get(f"{site.url}/api/jobs/no-such-job") as resp:
            assert resp.status == 404
            assert await resp.json() == {"error": "no job 'no-such-job' in the journal", "field": "job_id"}
        async with session.get(f"{site.url}/api/jobs?limit=0") as resp:
            assert resp.status == 400 and (await resp.json())["field"] == "limit"


def test_group_alive_ignores_zombies() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    deadline = time.monotonic() + 10
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)  # the child exits at once; unreaped, it is a zombie, which counts as gone
    assert not group_alive(proc.pid)
    proc.wait()


class Recorder:
    """A publisher that keeps the events, for in-process runs."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def publish(self, event: Any) -> None:
        self.events.append(event)

    def started(self, name: str) -> bool:
        return any(e.type == "backup.task.started" and e.data["task"]["name"] == name for e in self.events)


async def test_a_second_signal_stops_the_cleanup_hooks_too() -> None:
    from hookbus.bus.jobs.config import JobConfig
    from hookbus.bus.jobs.runner import SKIP_CANCELLED, JobRun

    job = JobConfig.model_validate({"name": "j", "repository": "R", "backup": "sleep 600", "post_hooks": [
        {"name": "slow cleanup", "command": "sleep 600", "run_on_job_failure": True},
        {"name": "last cleanup", "command": "true", "run_on_job_failure": True}]})
    recorder = Recorder()
    run = JobRun(job, recorder)
    task = asyncio.create_task(run.run())
    await wait_for(lambda: recorder.started("backup"), 10, "the backup to start")
    run.request_cancel()
    await wait_for(lambda: recorder.started("slow cleanup"), 10, "the cleanup hook to start")
    run.request_cancel()
    result = await asyncio.wait_for(task, 30)
    assert [(t["name"], t["status"], t["message"]) for t in result["tasks"]] == [
        ("backup", "failed", "cancelled; its process group was stopped"),
        ("slow cleanup", "failed", "cancelled; its process group was stopped"),
        ("last cleanup", "skipped", SKIP_CANCELLED),
        ("notification", "completed", "backup.job.finished published")]
    assert result["outcome"] == "cancelled"
