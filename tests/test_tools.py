"""The adapters against the real tools, each reporting to a real `hookbus serve`:

- borgmatic (PyPI) backing up a temporary directory with borg (Debian's
  borgbackup), its healthchecks hook pointed at the ping API and its `commands:`
  hooks running `hookbus emit --from borgmatic`;
- restic (Debian's restic) piping `restic backup --json` into `hookbus emit --from restic`;
- netcfgbu 0.8.0 in its own Python 3.8 virtualenv, backing up devices over real
  SSH (tests/tools_netcfgbu/fake_device.py) with adapters/netcfgbu_plugin.py in
  its plugins directory, first with hookbus down (spooled), then up;
- the ping API's open start surviving a SIGKILL of hookbus.

The real Borgitory 2.4.3 runs in tests/test_borgitory.py (followed as a
`[[sources]]` entry); the hook tests here reproduce how it runs a hook exactly:
`[shell, "-c", command]` with `BORGITORY_*` added to the environment
(services/hooks/hook_execution_service.py). Backrest cannot run here (a Go
binary); its tests feed the rendered template to `sh` on stdin, as Backrest
does (internal/hook/types/command.go).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import HOOKBUS, Site, free_port, http_ready, read_jsonl, wait_for, write_config

REPO = Path(__file__).resolve().parent.parent
TOOLS = Path(__file__).resolve().parent / "tools_netcfgbu"
KEY = "5f0a1c2e-9a7b-4c3d-8e1f-123456789abc"
TOKEN = "tok-netcfgbu-7c1d2e"


def configure(site: Site, *, checks: list[dict[str, str]] | None = None, tokens: list[str] | None = None) -> Path:
    path = write_config(
        site.root / "hookbus.toml",
        bus={"data_dir": str(site.root / "var"), "control": site.control, "publish": site.publish, "heartbeat": 0.5},
        http={"listen": f"127.0.0.1:{site.http_port}", **({"tokens": tokens} if tokens else {})},
        subscribers=[{"name": "audit", "kind": "jsonl", "events": ["*"], "path": str(site.root / "audit.jsonl")}],
    )
    for check in checks or []:
        with path.open("a") as f:
            f.write("\n[[checks]]\n" + "".join(f'{k} = {json.dumps(v)}\n' for k, v in check.items()))
    site.config = path
    return path


def audit(site: Site) -> list[dict[str, Any]]:
    return read_jsonl(site.root / "audit.jsonl")


async def run(*argv: str, env: dict[str, str] | None = None, stdin: bytes | None = None, cwd: Path | None = None,
              timeout: float = 120) -> tuple[int, str]:
    """Run a program to its end without blocking the loop; return (status, stdout+stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd)
    out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout)
    return proc.returncode or 0, out.decode(errors="replace")


async def serve(site: Site, procs: Any) -> Any:
    proc = procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 30, "hookbus serve to listen")
    return proc


def by_job(events: list[dict[str, Any]], job: str) -> list[dict[str, Any]]:
    """The job's own events (not what its check announces about it)."""
    return [e for e in events if isinstance(e.get("data"), dict) and e["data"].get("job") == job
            and e["source"] != "hookbus://checks"]


# -- borgmatic + borg ------------------------------------------------------------------------

def doc_block(page: str, after: str, starts: str) -> str:
    """The code block of the manual's page `docs/<page>` that begins with `starts`, in the
    section headed `after`: the recipes users copy are the ones these tests run."""
    text = (REPO / "docs" / page).read_text()
    section = text[text.index(after):]
    begin = section.index("\n" + starts) + 1  # the block's first line, not a mention in the text
    return section[begin:section.index("\n```", begin) + 1]


def borgmatic_config(path: Path, *, source: Path, repository: Path, ping_url: str, hookbus_config: Path) -> Path:
    emit = " ".join(shlex.quote(a) for a in HOOKBUS) + f" emit --config {shlex.quote(str(hookbus_config))}"
    commands = doc_block("borgmatic.md", "## Through its command hooks", "commands:")
    assert commands.count("hookbus emit --from borgmatic --job nightly ") == 3, commands
    commands = commands.replace("hookbus emit", emit).replace("--job nightly ", "--job nightly-commands ")
    healthchecks = doc_block("borgmatic.md", "## Through its healthchecks hook", "healthchecks:")
    assert "send_logs: true" in healthchecks
    healthchecks = healthchecks.replace("http://127.0.0.1:8765/ping/5f0a1c2e-9a7b-4c3d-8e1f-123456789abc", ping_url)
    path.write_text(f"source_directories:\n    - {source}\nrepositories:\n    - path: {repository}\n      label: local\n"
                    + healthchecks + commands)
    return path


@pytest.mark.timeout(240)
async def test_real_borgmatic_run_reports_through_ping_api_and_command_hooks(site: Site, procs: Any, tmp_path: Path) -> None:
    borgmatic = Path(sys.executable).parent / "borgmatic"
    assert borgmatic.exists(), "borgmatic comes with the test extra: pip install -e '.[test]'"
    assert shutil.which("borg"), "borg comes from Debian's borgbackup (see .ci/run)"
    configure(site, checks=[{"key": KEY, "job": "nightly", "repository": "MyRepository"}])
    await serve(site, procs)

    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "BORG_BASE_DIR": str(home), "HOOKBUS_STATE_DIR": str(tmp_path / "state"),
           "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes", "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}
    source = tmp_path / "data"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("precious\n")
    (source / "sub" / "b.bin").write_bytes(os.urandom(4096))
    repository = tmp_path / "repo"
    status, out = await run("borg", "init", "--encryption=none", str(repository), env=env)
    assert status == 0, out

    ping_url = f"{site.url}/ping/{KEY}"
    good = borgmatic_config(tmp_path / "good.yaml", source=source, repository=repository, ping_url=ping_url,
                            hookbus_config=site.config)
    status, out = await run(str(borgmatic), "-c", str(good), "create", "--stats", env=env)
    assert status == 0, out

    def ping_job(outcome: str) -> list[dict[str, Any]]:
        events = by_job(audit(site), "nightly")
        return events if any(e["type"] == "backup.job.finished" and e["data"]["outcome"] == outcome for e in events) else []

    events = await wait_for(lambda: ping_job("success"), 20, "the ping API's finished event")
    assert [e["type"] for e in events] == ["backup.job.started", "backup.log", "backup.job.finished"]
    started, log, finished = events
    assert started["data"]["repository"] == "MyRepository" and started["subject"] == "MyRepository"
    assert log["data"]["job_id"] == finished["data"]["job_id"] == started["data"]["job_id"]
    assert finished["data"]["outcome"] == "success" and finished["data"]["error"] is None
    assert "Creating archive" in finished["data"]["output_tail"], finished["data"]["output_tail"]
    assert f"Repository: {repository}" in finished["data"]["output_tail"]
    assert "Creating archive" in log["data"]["message"]

    commands = await wait_for(lambda: [e for e in by_job(audit(site), "nightly-commands") if e["type"] == "backup.job.finished"],
                              20, "the command hooks' finished event")
    hooked = by_job(audit(site), "nightly-commands")
    assert [e["type"] for e in hooked] == ["backup.job.started", "backup.job.finished"]
    assert hooked[0]["data"]["job_id"] == commands[0]["data"]["job_id"]
    assert commands[0]["data"]["outcome"] == "success" and commands[0]["data"]["repository"] == str(repository)

    # The same configuration against a repository that does not exist.
    missing = tmp_path / "missing-repo"
    bad = borgmatic_config(tmp_path / "bad.yaml", source=source, repository=missing, ping_url=ping_url,
                           hookbus_config=site.config)
    status, out = await run(str(borgmatic), "-c", str(bad), "create", env=env)
    assert status != 0, out
    failed = await wait_for(lambda: [e for e in ping_job("failed") if e["data"].get("outcome") == "failed"], 20,
                            "the ping API's failed event")
    assert failed[0]["data"]["reason"] == "backup_error"
    assert "does not exist" in failed[0]["data"]["error"], failed[0]["data"]["error"]
    assert str(missing) in failed[0]["data"]["output_tail"]
    second_run = [e for e in by_job(audit(site), "nightly") if e["data"]["job_id"] == failed[0]["data"]["job_id"]]
    assert [e["type"] for e in second_run] == ["backup.job.started", "backup.log", "backup.job.finished"]

    hook_failed = await wait_for(
        lambda: [e for e in by_job(audit(site), "nightly-commands") if e["data"].get("outcome") == "failed"], 20,
        "the error hook's failed event")
    assert str(missing) in hook_failed[0]["data"]["repository"]
    assert hook_failed[0]["data"]["error"], hook_failed[0]
    assert len({e["data"]["job_id"] for e in by_job(audit(site), "nightly-commands")}) == 2


# -- the ping API across a restart -------------------------------------------------------------

async def test_ping_start_then_kill9_then_finish_is_still_one_job(site: Site, procs: Any) -> None:
    configure(site, checks=[{"key": KEY, "job": "nightly", "repository": "MyRepository"}])
    proc = await serve(site, procs)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{site.url}/ping/{KEY}/start") as resp:
            assert resp.status == 200 and resp.headers["Ping-Body-Limit"]
        proc.kill9()
        proc.start()
        await wait_for(lambda: http_ready(site.url), 30, "hookbus serve to listen again")
        async with http.post(f"{site.url}/ping/{KEY}/0", data=b"done\n") as resp:
            assert resp.status == 200
    events = await wait_for(lambda: [e for e in audit(site) if e["type"] == "backup.job.finished"] and audit(site), 20,
                            "the finished event")
    started, finished = [e for e in events if e["type"].startswith("backup.job.")]
    assert finished["data"]["job_id"] == started["data"]["job_id"]
    assert finished["data"]["started_at"] == started["data"]["started_at"] and finished["data"]["outcome"] == "success"


async def test_concurrent_ping_pairs_for_one_key_each_pair_their_own_start(site: Site, procs: Any) -> None:
    """200 runs of one check, told apart by `rid`, over 20 connections at once:
    every finish carries its own start's job id, none is lost or doubled. At the
    same time 200 starts and finishes of another check without a `rid` (one open
    job for all) over 20 more connections: each finish closes the job open at
    its moment in the journal's order, as if the pings had come one at a time."""
    configure(site, checks=[{"key": KEY, "job": "nightly", "repository": "MyRepository"},
                            {"key": "one-at-a-time", "job": "shared", "repository": "pg"}])
    await serve(site, procs)
    finishes = {"": ("success", 0), "/0": ("success", 0), "/fail": ("failed", None), "/3": ("failed", 3)}
    runs = [(str(uuid.uuid4()), list(finishes)[i % len(finishes)], i % 5 == 0) for i in range(200)]
    todo = list(runs)

    async def ping(http: aiohttp.ClientSession, url: str, body: bytes | None) -> None:
        async with http.post(url, data=body) as resp:
            assert resp.status == 200 and await resp.text() == "OK", (url, resp.status)

    async def rid_worker(http: aiohttp.ClientSession) -> None:
        while todo:
            rid, finish, log = todo.pop()
            for path, body in [("/start", None), *([("/log", b"half way\n")] if log else []), (finish, b"done\n")]:
                await ping(http, f"{site.url}/ping/{KEY}{path}?rid={rid}", body)

    async def shared_worker(http: aiohttp.ClientSession) -> None:
        for _ in range(10):
            await ping(http, f"{site.url}/ping/one-at-a-time/start", None)
            await ping(http, f"{site.url}/ping/one-at-a-time/0", b"done\n")

    async with (aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=20)) as http,
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=20)) as shared):
        await asyncio.gather(*(rid_worker(http) for _ in range(20)), *(shared_worker(shared) for _ in range(20)))

    def all_finished() -> list[dict[str, Any]]:
        events = audit(site)
        return events if sum(e["type"] == "backup.job.finished" for e in events) >= 400 else []

    events = await wait_for(all_finished, 30, "400 finished events")
    by_rid: dict[str, list[dict[str, Any]]] = {}
    for event in by_job(events, "nightly"):
        by_rid.setdefault(event["data"]["rid"], []).append(event)
    assert sum(map(len, by_rid.values())) == 200 * 2 + 40 and sorted(by_rid) == sorted(rid for rid, _, _ in runs)
    job_ids = set()
    for rid, finish, log in runs:
        kinds = ["backup.job.started", *(["backup.log"] if log else []), "backup.job.finished"]
        assert [e["type"] for e in by_rid[rid]] == kinds, rid  # in this order in the journal, each once
        started, finished = by_rid[rid][0]["data"], by_rid[rid][-1]["data"]
        assert finished["job_id"] == started["job_id"] == by_rid[rid][1]["data"]["job_id"], rid
        assert finished["started_at"] == started["started_at"] <= finished["finished_at"]
        assert finished["duration_s"] >= 0 and finished["output_tail"] == "done\n"
        assert (finished["outcome"], finished["exit_status"]) == finishes[finish], (rid, finish)
        job_ids.add(started["job_id"])
    assert len(job_ids) == 200

    shared_events = by_job(events, "shared")  # in the journal's order
    assert len(shared_events) == 400
    open_job: dict[str, Any] | None = None
    started_ids = {e["data"]["job_id"] for e in shared_events if e["type"] == "backup.job.started"}
    for event in shared_events:
        if event["type"] == "backup.job.started":
            open_job = event["data"]
        elif open_job is not None:  # the job open right before it in the journal, and only that one
            assert (event["data"]["job_id"], event["data"]["started_at"]) == (open_job["job_id"], open_job["started_at"])
            open_job = None
        else:  # nothing open: a job of its own
            assert event["data"]["job_id"] not in started_ids and event["data"]["started_at"] is None
    assert len({e["data"]["job_id"] for e in shared_events if e["type"] == "backup.job.finished"}) == 200


# -- restic ----------------------------------------------------------------------------------

async def test_real_restic_json_output_piped_into_emit(site: Site, procs: Any, tmp_path: Path) -> None:
    assert shutil.which("restic"), "restic comes from Debian's restic (see .ci/run)"
    configure(site)
    await serve(site, procs)
    source = tmp_path / "data"
    source.mkdir()
    for i in range(3):
        (source / f"f{i}.bin").write_bytes(os.urandom(20000))
    env = {"RESTIC_PASSWORD": "pw-for-tests", "RESTIC_CACHE_DIR": str(tmp_path / "cache")}
    status, out = await run("restic", "init", "-r", str(tmp_path / "repo"), env=env)
    assert status == 0, out
    emit = [*HOOKBUS, "emit", "--config", str(site.config), "--from", "restic", "--job", "nightly", "--repository", "MyRepository"]
    pipeline = (f"set -o pipefail; restic -r {shlex.quote(str(tmp_path / 'repo'))} backup --json {shlex.quote(str(source))} 2>&1"
                f" | {' '.join(shlex.quote(a) for a in emit)}")
    status, out = await run("bash", "-c", pipeline, env=env)
    assert status == 0, out
    # Missing repository: restic prints only its fatal error (on stderr), then emit reports the failure.
    missing = (f"restic -r {shlex.quote(str(tmp_path / 'nowhere'))} backup --json {shlex.quote(str(source))} > {tmp_path}/out 2>&1;"
               f" {' '.join(shlex.quote(a) for a in emit)} --exit-status $? < {tmp_path}/out")
    status, out = await run("bash", "-c", missing, env=env)
    assert status == 0, out
    finished = await wait_for(lambda: len(audit(site)) >= 2 and audit(site), 20, "both restic reports")
    good, bad = finished
    assert good["type"] == bad["type"] == "backup.job.finished"
    assert good["data"]["outcome"] == "success" and good["subject"] == "MyRepository"
    stats = good["data"]["stats"]
    assert stats["files_new"] == 3 and stats["files_changed"] == 0 and stats["data_added"] > 60000
    assert len(stats["snapshot_id"]) >= 8 and good["data"]["snapshot_id"] == stats["snapshot_id"] and stats["duration_s"] >= 0
    assert bad["data"]["outcome"] == "failed" and bad["data"]["exit_status"] == 1
    assert "unable to open config file" in bad["data"]["error"], bad["data"]


# -- Borgitory and Backrest, run the way each tool runs a hook -------------------------------------

async def test_borgitory_hooks_report_start_and_finish_of_one_job(site: Site, procs: Any, tmp_path: Path) -> None:
    configure(site)
    await serve(site, procs)
    command = " ".join(shlex.quote(a) for a in HOOKBUS) + f" emit --config {shlex.quote(str(site.config))} --from borgitory --repository MyRepository"
    state = {"HOOKBUS_STATE_DIR": str(tmp_path / "state")}
    pre = {**state, "BORGITORY_REPOSITORY_ID": "123", "BORGITORY_TASK_INDEX": "0", "BORGITORY_JOB_TYPE": "scheduled"}
    post = {**pre, "BORGITORY_TASK_INDEX": "3"}
    for env in (pre, post):
        status, out = await run("/bin/bash", "-c", command, env=env)  # Borgitory: [hook.shell, "-c", hook.command]
        assert status == 0, out
    events = await wait_for(lambda: len(audit(site)) >= 2 and audit(site), 20, "both Borgitory hook events")
    started, finished = events
    assert (started["type"], finished["type"]) == ("backup.job.started", "backup.job.finished")
    assert started["data"]["job_id"] == finished["data"]["job_id"]
    assert started["data"]["job_type"] == "scheduled" and started["data"]["repository_id"] == "123"
    assert finished["data"]["outcome"] == "success" and finished["data"]["repository"] == "MyRepository"
    # Outside a Borgitory hook: a usage error naming the variable, no traceback.
    status, out = await run(*HOOKBUS, "emit", "--config", str(site.config), "--from", "borgitory",
                            env={"BORGITORY_REPOSITORY_ID": ""})
    assert status == 2 and "BORGITORY_REPOSITORY_ID" in out and "Traceback" not in out




def render_backrest(template: str, values: dict[str, Any]) -> str:
    """What Backrest's text/template makes of the hook for one condition."""
    out = template
    for expr, value in values.items():
        out = out.replace("{{ " + expr + " }}", value)
    assert "{{" not in out, out
    return out


async def test_backrest_command_hook_start_and_success_through_sh(site: Site, procs: Any, tmp_path: Path) -> None:
    configure(site)
    await serve(site, procs)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "hookbus").write_text(f"#!/bin/sh\nexec {' '.join(shlex.quote(a) for a in HOOKBUS)} \"$@\"\n")
    (bindir / "hookbus").chmod(0o755)
    template = doc_block("backrest.md", "## A command hook", "hookbus emit --from backrest")
    template = template.replace("hookbus emit --from backrest", f"hookbus emit --from backrest --config {shlex.quote(str(site.config))}")
    stats = json.loads((Path(__file__).parent / "samples" / "backrest-snapshot-success.json").read_text())["stats"]
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    common = {".JsonMarshal .Task": json.dumps('backup for plan "nightly"'), ".JsonMarshal .Repo.Id": '"MyRepository"',
              ".JsonMarshal .Plan.Id": '"nightly"', ".FormatTime .CurTime": now}
    start = render_backrest(template, {**common, ".Event": "CONDITION_SNAPSHOT_START", ".JsonMarshal .SnapshotId": '""',
                                       ".JsonMarshal .Error": '""', ".Duration.Seconds": "0.002", ".JsonMarshal .SnapshotStats": "null"})
    # An error text with quotes, a newline and shell syntax: JsonMarshal and the quoted heredoc keep it inert.
    success = render_backrest(template, {**common, ".Event": "CONDITION_SNAPSHOT_SUCCESS",
                                         ".JsonMarshal .SnapshotId": json.dumps(stats["snapshot_id"]),
                                         ".JsonMarshal .Error": json.dumps("it's \"fine\"\n$(touch /tmp/pwned) `id`"),
                                         ".Duration.Seconds": "1.5", ".JsonMarshal .SnapshotStats": json.dumps(stats)})
    env = {"PATH": f"{bindir}:{os.environ['PATH']}", "HOOKBUS_STATE_DIR": str(tmp_path / "state")}
    for script in (start, success):
        status, out = await run("sh", stdin=script.encode(), env=env)  # Backrest: exec.Command("sh"), Stdin = script
        assert status == 0, out
    events = await wait_for(lambda: len(audit(site)) >= 4 and audit(site), 20, "the Backrest hook events")
    assert [e["type"] for e in events] == ["backup.job.started", "backup.task.started", "backup.task.finished",
                                           "backup.job.finished"]
    assert len({e["data"]["job_id"] for e in events}) == 1
    job = events[-1]["data"]
    assert job["outcome"] == "success" and job["stats"]["files_new"] == 4 and job["repository"] == "MyRepository"
    assert job["error"] == "it's \"fine\"\n$(touch /tmp/pwned) `id`"


# -- netcfgbu 0.8.0 under Python 3.8 ----------------------------------------------------------

NETCFGBU = "0.8.0"


def python38() -> str | None:
    """A working Python 3.8 (pyenv's shims exist even where the version is not selected)."""
    import glob
    import subprocess

    candidates = [*sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python"))), shutil.which("python3.8")]
    for candidate in candidates:
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 8))"],
                               capture_output=True, text=True)
        if probe.stdout.strip() == "True":
            return candidate
    return None


def netcfgbu_venv() -> Path:
    """A Python 3.8 virtualenv with netcfgbu installed, made once and kept (keyed by
    version) under the temp dir: installing it takes a while, using it does not."""
    base = python38()
    if base is None:
        pytest.skip("netcfgbu 0.8 needs Python 3.8, which this machine does not have")
    root = Path(tempfile.gettempdir()) / "hookbus-tests" / f"netcfgbu-{NETCFGBU}-py38"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"netcfgbu-{NETCFGBU}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once build it once
        if not (root / "ready").exists():
            shutil.rmtree(root, ignore_errors=True)
            import subprocess

            subprocess.run([base, "-m", "venv", str(root)], check=True)
            done = subprocess.run([str(root / "bin" / "pip"), "install", "-q", f"netcfgbu=={NETCFGBU}"],
                                  capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"pip install netcfgbu=={NETCFGBU} failed:\n{done.stdout}\n{done.stderr}"
            (root / "ready").write_text("ok\n")
    return root


async def test_plugin_file_compiles_under_python38() -> None:
    base = python38()
    if base is None:
        pytest.skip("no Python 3.8 on this machine")
    with tempfile.TemporaryDirectory() as tmp:
        status, out = await run(base, "-c", "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)",
                                str(REPO / "adapters" / "netcfgbu_plugin.py"), str(Path(tmp) / "p.pyc"))
    assert status == 0, out


def netcfgbu_site(tmp_path: Path, device_port: int) -> Path:
    work = tmp_path / "netcfgbu"
    (work / "plugins").mkdir(parents=True)
    (work / "configs").mkdir()
    shutil.copy(REPO / "adapters" / "netcfgbu_plugin.py", work / "plugins" / "netcfgbu_plugin.py")
    shutil.copy(TOOLS / "zz_timing.py", work / "plugins" / "zz_timing.py")
    (work / "inventory.csv").write_text(
        "host,ipaddr,os_name,username,password\n"
        "switch1,127.0.0.1,eos,admin,devpass\n"        # backed up
        "router1,127.0.0.2,nxos,admin,devpass\n"       # nothing listens there: backup_failed
        "switch3,127.0.0.1,eos,broken,devpass\n")      # session refused: backup_success with an exception
    (work / "netcfgbu.toml").write_text(
        '[defaults]\ninventory = "inventory.csv"\nconfigs_dir = "configs"\nplugins_dir = "plugins"\n'
        'credentials.username = "admin"\ncredentials.password = "devpass"\n\n'
        f"[ssh_configs]\nport = {device_port}\n\n"
        '[[git]]\nrepo = "https://git.invalid/configs.git"\ntoken = "git-token-x"\n')
    return work


@pytest.mark.timeout(900)
async def test_real_netcfgbu_with_the_plugin_spools_while_hookbus_is_down_then_delivers(
        site: Site, procs: Any, tmp_path: Path) -> None:
    venv = await asyncio.to_thread(netcfgbu_venv)
    py, netcfgbu = str(venv / "bin" / "python"), str(venv / "bin" / "netcfgbu")
    port = free_port()
    device = await asyncio.create_subprocess_exec(py, "-W", "ignore", str(TOOLS / "fake_device.py"), str(port),
                                                  stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        line = await asyncio.wait_for(device.stdout.readline(), 60)  # type: ignore[union-attr]
        assert line.strip() == b"ready", line
        configure(site, tokens=[TOKEN])
        work = netcfgbu_site(tmp_path, port)
        spool = tmp_path / "spool" / "netcfgbu.jsonl"
        timings = tmp_path / "timings.txt"
        env = {"HOOKBUS_URL": site.url, "HOOKBUS_TOKEN": TOKEN, "HOOKBUS_SPOOL": str(spool),
               "HOOKBUS_TEST_TIMINGS": str(timings), "PYTHONWARNINGS": "ignore", "USER": "netcfgbu"}

        # 1. hookbus is not running: the run is not held up, and its events wait in the spool.
        began = time.monotonic()
        status, out = await run(netcfgbu, "backup", "-C", "netcfgbu.toml", env=env, cwd=work)
        down_run_s = time.monotonic() - began
        assert status == 0, out
        assert "TOTAL=3, OK=1, FAIL=2" in out, out
        assert "cannot be reached" in out and TOKEN not in out, out
        spooled = [json.loads(x) for x in spool.read_text().splitlines()]
        assert sorted(e["type"] for e in spooled) == ["backup.device.failed", "backup.device.failed",
                                                       "backup.device.succeeded", "backup.report"]
        assert "devpass" not in spool.read_text()

        # 2. hookbus up, but the token is wrong: refused (401), so everything stays in the spool.
        await serve(site, procs)
        status, out = await run(netcfgbu, "backup", "-C", "netcfgbu.toml", env={**env, "HOOKBUS_TOKEN": "wrong-tok-31337"},
                                cwd=work)
        assert status == 0, out
        assert "401" in out and "HOOKBUS_TOKEN" in out and "wrong-tok-31337" not in out, out
        assert len(spool.read_text().splitlines()) == 8 and audit(site) == []

        # 3. The right token: the next run sends the spool first, then its own events; vcs save reports too.
        # HOOKBUS_URL lists a node that is down first (DESIGN §12): the plugin passes over it.
        env["HOOKBUS_URL"] = f"http://127.0.0.1:{free_port()},{site.url}"
        status, out = await run(netcfgbu, "backup", "-C", "netcfgbu.toml", env=env, cwd=work)
        assert status == 0, out
        for args in (["git", "init", "-q"], ["git", "add", "-A"],
                     ["git", "-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-qm", "configs"]):
            status, out = await run(*args, cwd=work / "configs")
            assert status == 0, out
        status, out = await run(netcfgbu, "vcs", "save", "-C", "netcfgbu.toml", env=env, cwd=work)
        assert status == 0, out

        events = await wait_for(lambda: len(audit(site)) >= 13 and audit(site), 30, "three runs' events and the vcs report")
        assert len(events) == 13, [e["type"] for e in events]
        assert not spool.exists() or spool.read_text() == "", "everything sent leaves the spool"
        runs: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            runs.setdefault(event["data"]["job_id"], []).append(event)
        assert len(runs) == 4, "one job_id per netcfgbu run"
        backups = [r for r in runs.values() if r[-1]["type"] == "backup.report"]
        assert len(backups) == 3 and all(len(r) == 4 for r in backups)
        first = backups[0]  # the spooled run arrived first, in its own order
        assert first[0]["id"] == spooled[0]["id"]
        devices = {e["data"]["host"]: e for e in first if e["type"].startswith("backup.device.")}
        assert devices["switch1"]["type"] == "backup.device.succeeded" and devices["switch1"]["data"]["error"] is None
        assert devices["switch1"]["data"]["device"] == {"host": "switch1", "ipaddr": "127.0.0.1", "os_name": "eos",
                                                        "username": "admin"}
        assert devices["router1"]["type"] == "backup.device.failed"
        assert devices["router1"]["data"]["error"].startswith("ConnectionRefusedError:"), devices["router1"]["data"]
        assert devices["switch3"]["type"] == "backup.device.failed", "backup_success with an exception is a failure"
        assert devices["switch3"]["data"]["error"] == "ChannelOpenError: Session refused"
        report = first[-1]["data"]
        assert (report["total"], report["ok"], report["fail"]) == (3, 1, 2)
        assert {f["host"] for f in report["failures"]} == {"router1", "switch3"}
        assert report["start"].endswith("Z") and report["duration_s"] >= 0
        (vcs,) = [r for r in runs.values() if r[0]["type"] == "backup.vcs.saved"]
        assert vcs[0]["data"]["success"] is False and len(vcs[0]["data"]["tag_name"]) == 15  # nothing to commit
        assert "devpass" not in (site.root / "audit.jsonl").read_text()

        # Every call netcfgbu made into the plugin returned at once.
        calls = [float(x.split()[1]) for x in timings.read_text().splitlines()]
        assert len(calls) == 13
        print(f"\nnetcfgbu plugin calls: {len(calls)}, median {statistics.median(calls) * 1e3:.3f} ms, "
              f"max {max(calls) * 1e3:.3f} ms; run with hookbus down took {down_run_s:.2f} s")
        # A few ms at most; the bound leaves room for a loaded CI machine descheduling netcfgbu.
        assert statistics.median(calls) < 0.001 and max(calls) < 0.025, calls
    finally:
        device.kill()
        await device.wait()


# -- hookbus emit --from: what a hook gets wrong is said plainly -----------------------------------

EMIT_ERRORS = [
    (["--from", "duplicati"], {}, b"", "unknown adapter 'duplicati'; known: backrest, borgitory, borgmatic, restic"),
    (["--from", "borgmatic", "--repository", "/srv/repo"], {}, b"", "needs --state start, finish or fail"),
    (["--from", "borgitory"], {"BORGITORY_REPOSITORY_ID": "7", "BORGITORY_TASK_INDEX": "two"}, b"",
     "BORGITORY_TASK_INDEX must be the hook's task index"),
    (["--from", "backrest"], {}, b'{"event": "CONDITION_SNAPSHOT_END", "repo": ', "backrest hook JSON: stdin: is not valid JSON"),
    (["--from", "backrest"], {}, b'{"event": "CONDITION_SNAPSHOT_END"}', "backrest hook JSON: repo: required field is missing"),
    (["--from", "restic"], {}, b'{"message_type": "summary", "files_new": -1}\n', "--from restic: line 1.files_new: must not be negative"),
]


async def test_emit_from_usage_errors_exit_2_naming_what_is_wrong(site: Site, tmp_path: Path) -> None:
    configure(site)
    env = {"HOOKBUS_STATE_DIR": str(tmp_path / "state")}
    results = await asyncio.gather(*(run(*HOOKBUS, "emit", "--config", str(site.config), "--timeout", "2", *args,
                                         env={**env, **extra}, stdin=stdin) for args, extra, stdin, _ in EMIT_ERRORS))
    for (args, _, _, words), (status, out) in zip(EMIT_ERRORS, results, strict=True):
        assert status == 2, (args, out)
        assert words in out and "Traceback" not in out, (args, out)
