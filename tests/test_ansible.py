"""The `ansible` subscriber with the real ansible-playbook (ansible-core), local
connection, inside a real `hookbus serve`; and the process-tree runner it uses."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

from hookbus.bus.events.event import parse_event
from hookbus.bus.jobs import process
from hookbus.bus.notify.messages import render_default
from hookbus.bus.notify.templates import is_error
from hookbus.bus.settings import ConfigError
from hookbus.config import build_config
from hookbus.subscribers import create

from .conftest import Site, http_ready, read_jsonl, wait_for
from .test_process import run_cli

VALIDATION = "backup.validation.finished"


@pytest.fixture(autouse=True)
def ansible_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing read from ~/.ansible, /etc/ansible or a stray ansible.cfg; no host key checks."""
    home = tmp_path / "ansible-home"
    (home / "tmp").mkdir(parents=True)
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[defaults]\n")
    for name, value in {
        "ANSIBLE_CONFIG": str(cfg), "ANSIBLE_HOME": str(home), "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_REMOTE_TEMP": str(home / "remote"), "ANSIBLE_ROLES_PATH": str(home / "roles"),
        "ANSIBLE_COLLECTIONS_PATH": str(home / "collections"), "ANSIBLE_INVENTORY": str(home / "no-inventory"),
        "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,  # no interpreter discovery
    }.items():
        monkeypatch.setenv(name, value)


def playbook(tmp_path: Path, name: str, tasks: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent("""\
        - hosts: all
          connection: local
          gather_facts: false
          tasks:
        """) + textwrap.indent(textwrap.dedent(tasks), "    "))
    return path


def subscribers(site: Site, **ansible: Any) -> list[dict[str, Any]]:
    return [{"name": "audit", "kind": "jsonl", "path": str(site.root / "events.jsonl")},
            {"name": "validate", "kind": "ansible", "inventory": "localhost,", "retry": {"attempts": 1}, **ansible}]


async def start(site: Site, procs: Any, subs: list[dict[str, Any]]) -> Any:
    site.configure(subs)
    proc = procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to answer")
    return proc


async def post(site: Site, *events: dict[str, Any]) -> list[dict[str, Any]]:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.post(f"{site.url}/events", json=list(events),
                                                     headers={"Content-Type": "application/cloudevents-batch+json"}) as r:
        assert r.status == 202, await r.text()
        accepted: list[dict[str, Any]] = (await r.json())["accepted"]
        return accepted


def report(job_id: str, **data: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"report-{job_id}", "source": "netcfgbu://lab", "type": "backup.report",
            "data": {"job_id": job_id, "total": 2, "ok": 2, "fail": 0, **data}}


def results(site: Site) -> list[dict[str, Any]]:
    return [e for e in read_jsonl(site.root / "events.jsonl") if e["type"] == VALIDATION]


async def one_result(site: Site, timeout: float = 30) -> dict[str, Any]:
    found = await wait_for(lambda: results(site), timeout, "backup.validation.finished in the audit file")
    assert len(found) == 1, found
    return found[0]


def live_processes_with(marker: str) -> list[str]:
    """Command lines of live (not zombie) processes that mention marker."""
    found = []
    for pid, (state, _, _, _) in process._processes().items():
        if state == "Z":
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


async def test_report_runs_the_playbook_with_the_event_and_success_follows(site: Site, procs: Any, tmp_path: Path) -> None:
    out = tmp_path / "seen.txt"
    book = playbook(tmp_path, "record.yml", """\
        - name: Record what the playbook sees
          ansible.builtin.shell: >-
            printf '%s|%s|%s|%s|%s|%s\\n' {{ job_id | quote }} {{ note | quote }} {{ hookbus_event.type | quote }}
            {{ hookbus_event.data.ansible_connection | quote }} {{ emoji | quote }} {{ greeting | quote }} >> {{ out | quote }}
        """)
    await start(site, procs, subscribers(site, playbook=str(book), extra_vars={"out": str(out), "greeting": "{{ 6 * 7 }}"}))
    trigger = report("run-7", note="{{ lookup('pipe', 'id') }} {{ 6 * 7 }}", ansible_connection="ssh", emoji="é😀")
    [accepted] = await post(site, trigger)

    result = await one_result(site)
    data = result["data"]
    assert data["job_id"] == "run-7" and data["validator"] == "ansible" and data["subscriber"] == "validate"
    assert data["outcome"] == "success" and data["reason"] is None and not is_error(result)
    assert data["details"]["hosts"]["localhost"]["ok"] == 1 and data["details"]["hosts"]["localhost"]["changed"] == 1
    assert data["details"]["hosts"]["localhost"]["failed"] == 0 and data["details"]["hosts"]["localhost"]["unreachable"] == 0
    assert data["details"]["exit_code"] == 0 and "PLAY RECAP" in data["details"]["output_tail"]
    assert data["trigger"] == {"type": "backup.report", "id": "report-run-7", "source": "netcfgbu://lab", "seq": accepted["seq"]}
    assert "record.yml" in data["summary"]
    # The task saw the job_id and the whole event; templates carried by the event stayed text,
    # `ansible_connection` from the event did not switch the connection to ssh; the
    # subscriber's own extra_vars are templates as the operator meant them.
    assert out.read_text() == "run-7|{{ lookup('pipe', 'id') }} {{ 6 * 7 }}|backup.report|ssh|é😀|42\n"

    # A redelivery runs the playbook again, but its result is the same event: stored once.
    replay = await run_cli("replay", "--subscriber", "validate", "--from", str(accepted["seq"]), "--config", str(site.config))
    assert replay.returncode == 0, replay.stderr
    await wait_for(lambda: out.read_text().count("\n") == 2, 30, "the playbook to run a second time")

    async def delivered_twice() -> bool:
        status = await run_cli("status", "--json", "--config", str(site.config))
        subs = {s["name"]: s for s in orjson.loads(status.stdout)["subscribers"]}
        return bool(subs["validate"]["stats"].get("delivered", 0) >= 2 and subs["audit"]["lag"] == 0)

    await wait_for(delivered_twice, 30, "the second run to be delivered and the audit file to catch up", interval=0.3)
    assert len(results(site)) == 1


async def test_a_failing_task_gives_outcome_failed_with_its_findings(site: Site, procs: Any, tmp_path: Path) -> None:
    book = playbook(tmp_path, "check.yml", """\
        - name: Every device was backed up
          ansible.builtin.assert:
            that: fail | int == 0
            fail_msg: "{{ fail }} device(s) failed in job {{ job_id }}"
        """)
    await start(site, procs, subscribers(site, playbook=str(book)))
    await post(site, report("run-8", ok=1, fail=1))

    result = await one_result(site)
    data = result["data"]
    assert data["outcome"] == "failed" and data["reason"] == "task_failed" and is_error(result)
    assert data["job_id"] == "run-8"
    assert data["details"]["hosts"]["localhost"]["failed"] == 1 and data["details"]["exit_code"] == 2
    assert data["findings"] == ["localhost: Every device was backed up: 1 device(s) failed in job run-8"]
    assert data["summary"] == "check.yml failed on 1 of 1 host(s) (ok 0, changed 0, failed 1, unreachable 0)"
    # What a notifier sends by default: a failure, with its findings.
    assert render_default(parse_event(result)) == (
        "❌ Validation failed (ansible)\n\n"
        "check.yml failed on 1 of 1 host(s) (ok 0, changed 0, failed 1, unreachable 0)\n"
        "Reason: task_failed\n\n"
        "Findings:\n- localhost: Every device was backed up: 1 device(s) failed in job run-8\n\n"
        "Job ID: run-8")


async def test_a_hanging_playbook_is_stopped_at_its_timeout(site: Site, procs: Any, tmp_path: Path) -> None:
    marker = "97.3125"  # an unusual sleep length: finds the playbook's child among all processes
    book = playbook(tmp_path, "hang.yml", f"""\
        - name: Say where we are
          ansible.builtin.debug:
            msg: "validating {{{{ job_id }}}}"
        - name: Hang
          ansible.builtin.command: sleep {marker}
        """)
    await start(site, procs, subscribers(site, playbook=str(book), timeout=3))
    await post(site, report("run-9"))
    await wait_for(lambda: live_processes_with(f"sleep {marker}"), 20, "the playbook to start its task")

    result = await one_result(site)
    data = result["data"]
    assert data["outcome"] == "failed" and data["reason"] == "timeout" and is_error(result)
    assert data["summary"] == "hang.yml timed out after 3s and was stopped"
    assert data["details"]["exit_code"] is None and data["details"]["duration_s"] < 3 + process.GRACE + 1
    assert "validating run-9" in data["details"]["output_tail"]  # the output so far is kept
    assert live_processes_with(f"sleep {marker}") == [] and live_processes_with(str(book)) == []


async def test_the_example_playbook_validates_backed_up_configs(site: Site, procs: Any, tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "config" / "ansible" / "validate-configs.yml"
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder, texts in ((good, ["hostname r1\n", "hostname r2\n"]), (bad, ["hostname r1\n", ""])):
        (folder / ".git").mkdir(parents=True)  # netcfgbu keeps its configs in git: not a config
        for n, text in enumerate(texts, 1):
            (folder / f"r{n}.cfg").write_text(text)
    subs = subscribers(site, playbook=str(example))
    subs[1] |= {"name": "good", "when": {"job_id": "good"}, "extra_vars": {"configs_dir": str(good), "batfish_host": "localhost"}}
    subs.append({**subs[1], "name": "bad", "when": {"job_id": "bad"}, "extra_vars": {"configs_dir": str(bad)}})
    await start(site, procs, subs)
    await post(site, report("good"), report("bad"))

    done = await wait_for(lambda: len(results(site)) == 2 and results(site), 40, "both validations")
    by_job = {e["data"]["job_id"]: e["data"] for e in done}
    assert by_job["good"]["outcome"] == "success"
    assert "Batfish check skipped: the batfish.base role is not installed" in by_job["good"]["details"]["output_tail"]
    assert by_job["bad"]["outcome"] == "failed" and by_job["bad"]["reason"] == "task_failed"
    assert by_job["bad"]["findings"] == ["localhost: No config is empty (r2.cfg): r2.cfg is empty"]


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    book = playbook(tmp_path, "ok.yml", "- ansible.builtin.ping:\n")

    def error(**table: Any) -> str:
        with pytest.raises(ConfigError) as exc:
            build_config({"subscribers": [{"name": "v", "kind": "ansible", "playbook": str(book), **table}]}, "test")
        return str(exc.value)

    assert error(playbook=str(tmp_path / "missing.yml")).startswith("subscribers[0] (v).playbook: ")
    assert "no such file" in error(playbook=str(tmp_path / "missing.yml"))
    assert "subscribers[0] (v).inventory: " in error(inventory=str(tmp_path / "hosts"))
    assert "subscribers[0] (v).extra_vars: " in error(extra_vars={"not-a-name": 1})
    assert "is set by hookbus" in error(extra_vars={"hookbus_event": 1})
    assert "subscribers[0] (v).timeout: " in error(timeout=0)
    assert "subscribers[0] (v).playbok: unknown key" in error(playbok="x")
    config = build_config({"subscribers": [{"name": "v", "kind": "ansible", "playbook": str(book)}]}, "test")
    sub = config.subscribers[0]
    assert sub.timeout == 600 and sub.playbook == book.resolve() and create(sub).handler_timeout() > 600


def test_missing_ansible_playbook_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    book = playbook(tmp_path, "ok.yml", "- ansible.builtin.ping:\n")
    config = build_config({"subscribers": [{"name": "v", "kind": "ansible", "playbook": str(book)}]}, "test")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "empty" / "python"))
    with pytest.raises(ConfigError, match=r"ansible-playbook not found .* pip install 'hookbus\[ansible\]'"):
        create(config.subscribers[0])


# -- the process-tree runner ------------------------------------------------------------

STUBBORN = textwrap.dedent("""\
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A child in a session of its own (as ansible's workers are), also deaf to SIGTERM.
    subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)", sys.argv[1]],
                     start_new_session=True)
    print("started", flush=True)
    time.sleep(300)
    """)


async def test_process_tree_stops_every_session_at_timeout_and_keeps_the_output(tmp_path: Path) -> None:
    marker = f"tree-{os.getpid()}-timeout"
    finished = await process.run([sys.executable, "-c", STUBBORN, marker], timeout=1.0, grace=0.5)
    assert finished.timed_out and finished.exit_code is None
    assert finished.output == "started\n"
    assert 1.0 <= finished.duration_s < 5
    assert live_processes_with(marker) == []


async def test_process_tree_is_killed_when_cancelled(tmp_path: Path) -> None:
    marker = f"tree-{os.getpid()}-cancel"
    task = asyncio.create_task(process.run([sys.executable, "-c", STUBBORN, marker], timeout=60))
    await wait_for(lambda: len(live_processes_with(marker)) == 2, 10, "the command and its child")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: live_processes_with(marker) == [], 5, "the whole tree to be gone")


async def test_process_tree_reports_exit_status_and_output_tail() -> None:
    script = "import sys; sys.stdout.write('x' * 5000 + 'END'); sys.exit(3)"
    finished = await process.run([sys.executable, "-c", script], timeout=10, output_limit=100)
    assert finished.exit_code == 3 and not finished.timed_out
    assert finished.output.endswith("x" * 97 + "END") and finished.output.startswith("…[cut: 4903 bytes")


async def test_local_runs_use_hookbus_python_not_a_shim_first_on_path(site: Site, procs: Any, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Interpreter discovery picks the first python3 on PATH: a pyenv shim that prints its complaint
    ("Module result deserialization failed: No start of json char found"). hookbus sets
    ANSIBLE_PYTHON_INTERPRETER to its own Python for a local inventory when the user has not."""
    shims = tmp_path / "shims"
    shims.mkdir()
    for name in ["python", "python3", *(f"python3.{minor}" for minor in range(6, 16))]:
        shim = shims / name
        shim.write_text(f"#!/bin/sh\necho 'pyenv: {name}: command not found'\nexit 127\n")
        shim.chmod(0o755)
    monkeypatch.delenv("ANSIBLE_PYTHON_INTERPRETER")
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")
    book = playbook(tmp_path, "which.yml", """\
        - name: Run a module (not raw), so the interpreter matters
          ansible.builtin.command: echo ran
        """)
    await start(site, procs, subscribers(site, playbook=str(book)))
    await post(site, report("shimmed"))
    data = (await one_result(site))["data"]
    assert data["outcome"] == "success", data["details"]["output_tail"]
