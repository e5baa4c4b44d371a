"""hookbus following the real Borgitory 2.4.3 (`[[sources]] kind = "borgitory"`, DESIGN §14).

Borgitory runs from its own virtualenv under Python >= 3.12 (it fails at import
under 3.11), installed by `borgitory_venv` from PyPI: the package without its
dependencies (pyfuse3, which it never imports, does not build without the FUSE 3
headers) plus every other requirement its wheel lists. It insists on paths under
/mnt, which a private mount namespace (`unshare -m` and a bind mount of a temp
folder) gives it without touching the host. It backs up with Debian's borg.

The venv is made once and kept under $HOOKBUS_TEST_CACHE (default: the temp dir),
keyed by version; on a fresh machine it installs itself. Its base Python is
$HOOKBUS_TEST_PYTHON312 when set (`.ci/run` sets it), else found on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import Proc, Site, free_port, http_ready, read_jsonl, toml_value, wait_for
from .standins import StandIn, ok, standin  # noqa: F401 - standin is a fixture

BORGITORY = "2.4.3"
REPOSITORY = "MyRepository"
PASSPHRASE = "passphrase-123"


# -- Borgitory's own virtualenv ----------------------------------------------------------

def python312() -> str | None:
    """A Python >= 3.12: $HOOKBUS_TEST_PYTHON312 (`.ci/run` sets it from `.ci/python312`, which builds one where
    the machine has none), else pyenv's or on PATH (pyenv's shims exist where the version is not selected)."""
    candidates = [os.environ.get("HOOKBUS_TEST_PYTHON312"),
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python"))),
                  shutil.which("python3.13"), shutil.which("python3.12"), shutil.which("python3")]
    for candidate in candidates:
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        probe = subprocess.run([candidate, "-c", "import sys, venv; print(sys.version_info >= (3, 12))"],
                               capture_output=True, text=True)
        if probe.stdout.strip() == "True":
            return candidate
    return None


def cache_root() -> Path:
    return Path(os.environ.get("HOOKBUS_TEST_CACHE") or Path(tempfile.gettempdir()) / "hookbus-tests")


def borgitory_venv() -> Path:
    """Borgitory installed in a virtualenv of its own, made once (under a lock) and kept."""
    base = python312()
    if base is None:
        pytest.skip(f"Borgitory {BORGITORY} needs Python >= 3.12, which this machine does not have")
    root = cache_root() / f"borgitory-{BORGITORY}"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"borgitory-{BORGITORY}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once build it once
        if not (root / "ready").exists():
            shutil.rmtree(root, ignore_errors=True)
            subprocess.run([base, "-m", "venv", str(root)], check=True)
            pip = [str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            done = subprocess.run([*pip, "--no-deps", f"borgitory=={BORGITORY}"], capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"pip install borgitory=={BORGITORY} failed:\n{done.stdout}\n{done.stderr}"
            # Every requirement its wheel lists, but pyfuse3 and the extras (dev tools).
            listed = subprocess.run(
                [str(root / "bin" / "python"), "-c",
                 "import importlib.metadata as m; print('\\n'.join(m.requires('borgitory') or []))"],
                capture_output=True, text=True, check=True).stdout.splitlines()
            wanted = [r for r in listed if r.strip() and "extra ==" not in r and not r.startswith("pyfuse3")]
            done = subprocess.run([*pip, *wanted], capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, f"pip install of Borgitory's requirements failed:\n{done.stdout}\n{done.stderr}"
            (root / "ready").write_text("ok\n")
    return root


# -- a running Borgitory -------------------------------------------------------------------

@dataclass
class Borgitory:
    venv: Path
    root: Path  # data/ (its database) and mnt/ (seen as /mnt inside its namespace)
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database(self) -> Path:
        return self.root / "data" / "borgitory.db"  # it opens data/borgitory.db under its working directory

    def start(self) -> None:
        (self.root / "mnt").mkdir(exist_ok=True)
        script = (f"mount --bind {self.root / 'mnt'} /mnt && cd {self.root} && "
                  f"exec borgitory serve --host 127.0.0.1 --port {self.port} --log-level warning")
        unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
        env = {**os.environ, "PATH": f"{self.venv / 'bin'}:{os.environ['PATH']}", "SECRET_KEY": "test-secret-key-1"}
        with (self.root / "borgitory.log").open("ab") as log:
            self.proc = subprocess.Popen([*unshare, "sh", "-c", script], stdout=log, stderr=subprocess.STDOUT, env=env)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        # uvicorn's graceful stop waits for open connections, and a job stream never closes.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        path = self.root / "borgitory.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    async def ready(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, f"Borgitory exited:\n{self.log()}"
        try:
            async with aiohttp.ClientSession() as s, s.get(self.url + "/api/repositories/",
                                                           timeout=aiohttp.ClientTimeout(total=1)) as r:
                return r.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def backup(self, source: str, pre: list[dict[str, Any]] | None = None,
                     post: list[dict[str, Any]] | None = None) -> str:
        """Start a backup job (no login needed); return its id, read from the HTML answer."""
        body: dict[str, Any] = {"repository_id": 1, "source_path": source}
        if pre:
            body["pre_job_hooks"] = json.dumps(pre)
        if post:
            body["post_job_hooks"] = json.dumps(post)
        async with aiohttp.ClientSession() as s, s.post(self.url + "/api/jobs/backup", json=body) as r:
            text = await r.text()
        found = re.search(r"Backup job #([0-9a-f-]{36})", text)
        assert r.status == 200 and found, f"{r.status}: {text[:500]}"
        return found.group(1)


def can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
    with tempfile.TemporaryDirectory() as tmp:
        probe = subprocess.run([*unshare, "sh", "-c", f"mount --bind {tmp} /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def borgitory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Borgitory]:
    """One Borgitory for this module's tests, with a user and a repository (borg init by Borgitory)."""
    assert shutil.which("borg"), "borg comes from Debian's borgbackup (see .ci/run)"
    if not can_unshare():
        pytest.skip("Borgitory needs its paths under /mnt: a private mount namespace (unshare -m) is not possible here")
    venv = borgitory_venv()
    server = Borgitory(venv, tmp_path_factory.mktemp("borgitory"), free_port())
    (server.root / "mnt" / "src").mkdir(parents=True)
    for i in range(3):
        (server.root / "mnt" / "src" / f"file{i}.txt").write_text(f"data {i}\n" * 100)
    server.start()
    try:
        asyncio.run(setup(server))
        yield server
    finally:
        server.stop()


async def setup(server: Borgitory) -> None:
    started = time.monotonic()
    await wait_for(server.ready, 60, "Borgitory to answer")
    print(f"Borgitory {BORGITORY} answered after {time.monotonic() - started:.1f} s")
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as s:
        user = {"username": "admin", "password": "admin-password-1"}
        async with s.post(server.url + "/auth/register", data=user) as r:
            assert r.status == 200, await r.text()
        async with s.post(server.url + "/auth/login", data=user) as r:
            assert r.status == 200, await r.text()
        repo = {"name": REPOSITORY, "path": "/mnt/repo", "passphrase": PASSPHRASE}
        async with s.post(server.url + "/api/repositories/", json=repo) as r:
            assert r.status == 200 and "created successfully" in await r.text(), await r.text()


# -- hookbus beside it -------------------------------------------------------------------

def configure(site: Site, server: Borgitory, slack: str, *, database: bool = True) -> Path:
    site.configure([
        {"name": "audit", "kind": "jsonl", "events": ["*"], "path": str(site.root / "audit.jsonl")},
        {"name": "ops", "kind": "slack", "events": ["backup.job.finished"], "webhook_url": slack},
    ])
    source = {"name": "borgitory", "kind": "borgitory", "url": server.url, "max_delay": 1}
    if database:
        source["database"] = str(server.database)
    with site.config.open("a") as f:
        f.write("\n[[sources]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in source.items()))
    return site.config


def audit(site: Site) -> list[dict[str, Any]]:
    return read_jsonl(site.root / "audit.jsonl")


def finished(site: Site, job_id: str) -> dict[str, Any] | None:
    return next((e["data"] for e in audit(site) if e["type"] == "backup.job.finished" and e["data"]["job_id"] == job_id), None)


def of_job(site: Site, job_id: str) -> list[dict[str, Any]]:
    return [e for e in audit(site) if e["data"].get("job_id") == job_id]


def serve(site: Site, tmp_path: Path, n: int) -> Proc:
    return Proc(["serve", "--config", str(site.config)], tmp_path / f"serve{n}.log", tmp_path).start()


PRE = [{"name": "Database Dump", "command": "echo dumping; echo \"$BORGITORY_JOB_TYPE\"", "critical": True},
       {"name": "Warm Up", "command": "echo warm"}]
POST = [{"name": "Cleanup Temp Files", "command": "echo cleanup", "run_on_job_failure": True}]
FAILING_PRE = [{"name": "Database Dump", "command": "echo 'pg_dump: error: connection to server failed' >&2; exit 3",
                "critical": True}]


@pytest.mark.timeout(900)  # the first one installs Borgitory on a fresh machine
async def test_success_critical_hook_failure_and_backup_failure_reach_hookbus_and_slack(
        borgitory: Borgitory, site: Site, standin: StandIn, tmp_path: Path) -> None:
    slack = standin.on("/services/", ok())
    configure(site, borgitory, slack + "/services/T0/B0/borgitory")
    hookbus = serve(site, tmp_path, 0)
    try:
        await wait_for(lambda: http_ready(site.url), 30, "hookbus serve to listen")
        await wait_for(lambda: "following" in hookbus.output(), 30, "hookbus to follow Borgitory's stream")
        good = await borgitory.backup("/mnt/src", PRE, POST)
        hook_failed = await borgitory.backup("/mnt/src", FAILING_PRE, POST)
        await wait_for(lambda: finished(site, good), 60, "the good job to finish in hookbus")
        await next_second()
        backup_failed = await borgitory.backup("/mnt/no-such-folder", None, POST)
        for job_id in (hook_failed, backup_failed):
            await wait_for(lambda j=job_id: finished(site, j), 60, f"job {job_id} to finish in hookbus")
        await wait_for(lambda: len(standin.to("/services/")) >= 3, 30, "three messages to Slack")
    finally:
        hookbus.stop()

    ok_job = finished(site, good)
    assert ok_job is not None
    assert ok_job["outcome"] == "success" and ok_job["reason"] is None and ok_job["repository"] == REPOSITORY
    assert ok_job["counts"] == {"completed": 3, "failed": 0, "skipped": 0, "total": 3}
    assert [(t["kind"], t["phase"], t["status"]) for t in ok_job["tasks"]] == [
        ("hook", "pre", "completed"), ("backup", "main", "completed"), ("hook", "post", "completed")]
    assert "[Database Dump] dumping" in ok_job["tasks"][0]["output_tail"]
    assert "composite" in ok_job["tasks"][0]["output_tail"]  # BORGITORY_JOB_TYPE, as DESIGN §14 says
    kinds = [e["type"] for e in of_job(site, good)]
    assert kinds == ["backup.job.started"] + ["backup.task.started", "backup.task.finished"] * 3 + ["backup.job.finished"]

    hook_job = finished(site, hook_failed)
    assert hook_job is not None
    assert (hook_job["outcome"], hook_job["reason"], hook_job["failed_hook"]) == ("failed", "critical_hook", "Database Dump")
    assert hook_job["counts"] == {"completed": 0, "failed": 1, "skipped": 2, "total": 3}
    assert [t["status"] for t in hook_job["tasks"]] == ["failed", "skipped", "skipped"]  # the post-hook too (§14)
    assert "pg_dump: error: connection to server failed" in hook_job["error"]

    backup_job = finished(site, backup_failed)
    assert backup_job is not None
    assert (backup_job["outcome"], backup_job["reason"], backup_job["failed_hook"]) == ("failed", "backup_error", None)
    assert backup_job["counts"] == {"completed": 0, "failed": 1, "skipped": 1, "total": 2}
    assert backup_job["failed_tasks"] == ["backup"]
    assert "No such file or directory" in backup_job["error"]

    texts = {hit.json()["text"].rpartition("Job ID: ")[2].strip(): hit.json()["text"] for hit in standin.to("/services/")}
    assert texts[good].startswith("✅ Backup Job Completed Successfully\n\nBackup job for 'MyRepository' completed successfully.")
    assert texts[hook_failed].startswith(
        "❌ Backup Job Failed - Critical Hook Error\n\nBackup job for 'MyRepository' failed due to critical hook failure.\n"
        "Error: Critical hook execution failed: Database Dump: pg_dump: error: connection to server failed")
    assert "Failed Hook: Database Dump\nTasks Completed: 0, Skipped: 2, Total: 3\n" in texts[hook_failed]
    assert texts[backup_failed].startswith(
        "❌ Backup Job Failed - Backup Error\n\nBackup job for 'MyRepository' failed during backup process.\n"
        "Error: Backup failed with return code 1: ")
    assert "Tasks Completed: 0, Skipped: 1, Total: 2\n" in texts[backup_failed]


@pytest.mark.timeout(900)  # the first one installs Borgitory on a fresh machine
async def test_every_job_once_across_sigkill_of_hookbus_and_a_restart_of_borgitory(
        borgitory: Borgitory, site: Site, standin: StandIn, tmp_path: Path) -> None:
    slack = standin.on("/services/", ok())
    configure(site, borgitory, slack + "/services/T0/B0/borgitory")
    jobs: list[str] = []
    hookbus = serve(site, tmp_path, 0)
    try:
        await wait_for(lambda: "following" in hookbus.output(), 30, "hookbus to follow Borgitory's stream")
        # Killed while a job runs (its pre-hook sleeps), then one job runs while hookbus is down.
        slow = [{"name": "Slow Dump", "command": "sleep 2; echo dumped", "critical": True}]
        jobs.append(await borgitory.backup("/mnt/src", slow, POST))
        await wait_for(lambda: any(e["type"] == "backup.job.started" for e in of_job(site, jobs[0])), 30,
                       "hookbus to see the job start")
        hookbus.kill9()
        jobs.append(await borgitory.backup("/mnt/src", FAILING_PRE, POST))
        await wait_for(lambda: asyncio.to_thread(lambda: borgitory_done(borgitory, jobs)), 60, "both jobs to end")
        hookbus = serve(site, tmp_path, 1)
        for job_id in jobs:
            await wait_for(lambda j=job_id: finished(site, j), 60, f"job {job_id} caught up after the restart")
        # Borgitory killed during a job and started again: it marks that job failed at its start;
        # hookbus reconnects by itself (backoff), catches that up, and sees the next job live.
        slower = [{"name": "Slower Dump", "command": "sleep 20", "critical": True}]  # killed long before its end
        jobs.append(await borgitory.backup("/mnt/src", slower, POST))
        await wait_for(lambda: any(e["type"] == "backup.task.started" for e in of_job(site, jobs[2])), 30,
                       "hookbus to see the job's first task start")
        borgitory.kill9()
        await wait_for(lambda: "retrying in" in hookbus.output(), 30, "hookbus to notice Borgitory is gone")
        borgitory.start()
        await wait_for(borgitory.ready, 60, "Borgitory to answer again")
        await wait_for(lambda: hookbus.output().count("following") >= 2, 30, "hookbus to follow the stream again")
        await wait_for(lambda: finished(site, jobs[2]), 30, "the interrupted job to end in hookbus")
        await next_second()
        jobs.append(await borgitory.backup("/mnt/src", PRE, POST))
        await wait_for(lambda: finished(site, jobs[3]), 60, "the job after Borgitory's restart")
        # Killed between jobs, and started again: nothing new, nothing twice.
        hookbus.kill9()
        hookbus = serve(site, tmp_path, 2)
        await wait_for(lambda: hookbus.output().count("jobs read from") >= 1, 30, "hookbus to catch up once more")
        await wait_for(lambda: seen_jobs(site) <= told(standin), 30, "Slack to be told of every job")
    finally:
        hookbus.stop()

    events = audit(site)
    ids = [(e["source"], e["id"]) for e in events]
    assert len(ids) == len(set(ids)), "an event stored twice"
    for job_id in jobs:
        ends = [e for e in events if e["type"] == "backup.job.finished" and e["data"]["job_id"] == job_id]
        assert len(ends) == 1, job_id
    outcomes = [finished(site, j)["outcome"] for j in jobs]  # type: ignore[index]
    assert outcomes == ["success", "failed", "failed", "success"]
    interrupted = finished(site, jobs[2])
    assert interrupted is not None and interrupted["error"].startswith("Job cancelled on startup - was running when")
    assert [t["status"] for t in interrupted["tasks"]] == ["failed", "failed", "failed"]  # Borgitory's own recovery
    assert finished(site, jobs[1])["failed_hook"] == "Database Dump"  # type: ignore[index]
    # Delivery is at-least-once (DESIGN §2): a SIGKILL between Slack's answer and the cursor's
    # move tells Slack again; the journal, though, holds every job once (above).
    assert set(jobs) <= told(standin)


@pytest.mark.timeout(900)  # the module's Borgitory may be installed in its setup, on a fresh machine
async def test_without_the_database_the_stream_alone_reports_every_job(
        borgitory: Borgitory, site: Site, standin: StandIn, tmp_path: Path) -> None:
    """Borgitory on another host: no database, the stream only. Jobs Borgitory still holds
    in memory are published with their outcome; the next ones live, task by task."""
    slack = standin.on("/services/", ok())
    configure(site, borgitory, slack + "/services/T0/B0/borgitory", database=False)
    await next_second()
    earlier = await borgitory.backup("/mnt/src", PRE, POST)  # ends before hookbus starts
    await wait_for(lambda: asyncio.to_thread(borgitory_done, borgitory, [earlier]), 60, "the earlier job to end")
    hookbus = serve(site, tmp_path, 0)
    try:
        await wait_for(lambda: "following" in hookbus.output(), 30, "hookbus to follow Borgitory's stream")
        await wait_for(lambda: finished(site, earlier), 30, "the job Borgitory holds in memory")
        before = seen_jobs(site)
        await next_second()
        good = await borgitory.backup("/mnt/src", PRE, POST)
        await wait_for(lambda: finished(site, good), 60, "the good job")
        hook_failed = await borgitory.backup("/mnt/src", FAILING_PRE, POST)
        await wait_for(lambda: finished(site, hook_failed), 60, "the failed job")
    finally:
        hookbus.stop()
    assert all(finished(site, job_id)["outcome"] in ("success", "failed") for job_id in before)  # type: ignore[index]
    assert (finished(site, earlier) or {}).get("outcome") == "success"
    ok_job, failed_job = finished(site, good), finished(site, hook_failed)
    assert ok_job is not None and failed_job is not None
    assert (ok_job["outcome"], ok_job["counts"]) == ("success", {"completed": 3, "failed": 0, "skipped": 0, "total": 3})
    assert [(t["kind"], t["name"]) for t in ok_job["tasks"]] == [
        ("hook", "Pre-job hooks (MyRepository)"), ("backup", "Backup MyRepository"), ("hook", "Post-job hooks (MyRepository)")]
    assert (failed_job["outcome"], failed_job["reason"]) == ("failed", "critical_hook")
    assert failed_job["failed_hook"] == "Pre-job hooks (MyRepository)"  # the stream does not name the hook
    assert failed_job["counts"] == {"completed": 0, "failed": 1, "skipped": 2, "total": 3}
    assert all(e["source"] == "borgitory://borgitory" for e in audit(site))


async def next_second() -> None:
    """Borgitory names archives by the second: a second backup of one repository within
    the same second fails with "Archive … already exists". Called once the previous
    backup has ended, this lets the next one start in a later second."""
    now = int(time.time())
    await wait_for(lambda: int(time.time()) > now, 2, "the next second")


def borgitory_done(server: Borgitory, jobs: list[str]) -> bool:
    import sqlite3

    with sqlite3.connect(f"file:{server.database}?mode=ro", uri=True, timeout=5) as db:
        rows = db.execute(f"SELECT status FROM jobs WHERE id IN ({','.join('?' * len(jobs))})", jobs).fetchall()
    return len(rows) == len(jobs) and all(r[0] in ("completed", "failed") for r in rows)


def told(standin: StandIn) -> set[str]:
    """The jobs Slack was told of (by the Job ID line of each message)."""
    return {hit.json()["text"].rpartition("Job ID: ")[2].strip() for hit in standin.to("/services/")}


def seen_jobs(site: Site) -> set[str]:
    return {e["data"]["job_id"] for e in audit(site) if e["type"] == "backup.job.finished"}


# -- without Borgitory: the configuration, the stream as Borgitory writes it, hostile input --------

SAMPLE_STREAM = Path(__file__).parent / "samples" / "borgitory-2.4.3-jobs-stream.txt"


def source_config(tmp_path: Path, table: str) -> Any:
    from hookbus.config import load_config

    path = tmp_path / "hookbus.toml"
    path.write_text(f'[bus]\ndata_dir = "{tmp_path / "var"}"\n\n[[sources]]\n{table}\n')
    return load_config(path)


@pytest.mark.parametrize(("table", "error"), [
    ('name = "b"\nkind = "borgmatic"\nurl = "http://127.0.0.1:8000"',
     "sources[0] (b).kind: no source kind 'borgmatic'; known: borgitory"),
    ('name = "b"\nkind = "borgitory"\nurl = "127.0.0.1:8000"',
     "sources[0] (b).url: Value error, must be the tool's base URL, http:// or https://, such as http://127.0.0.1:8000"),
    ('name = "b"\nkind = "borgitory"\nurl = "http://127.0.0.1:8000"\nurls = "x"', "sources[0] (b).urls: unknown key"),
    ('name = "b"\nkind = "borgitory"', "sources[0] (b).url: Field required"),
    ('name = "b"\nkind = "borgitory"\nurl = "http://h:1"\n[[sources]]\nname = "b"\nkind = "borgitory"\nurl = "http://h:2"',
     "sources[1] (b).name: 'b' is used twice; source names must be unique"),
])
def test_sources_config_errors_name_the_key(tmp_path: Path, table: str, error: str) -> None:
    from hookbus.bus.settings import ConfigError

    with pytest.raises(ConfigError) as exc:
        source_config(tmp_path, table)
    assert str(exc.value).startswith(error), str(exc.value)


def test_sources_config_as_design_shows_it(tmp_path: Path) -> None:
    config = source_config(tmp_path, 'name = "borgitory"\nkind = "borgitory"\nurl = "http://127.0.0.1:8000/"\n'
                                     'database = "~/borgitory/data/borgitory.db"')
    [source] = config.sources
    assert (source.name, source.kind, source.url) == ("borgitory", "borgitory", "http://127.0.0.1:8000")
    assert source.database == Path.home() / "borgitory" / "data" / "borgitory.db"


def stream_messages(text: str, piece: int) -> list[dict[str, Any]]:
    from hookbus.adapters.borgitory import StreamMessages

    reader = StreamMessages()
    out: list[dict[str, Any]] = []
    for i in range(0, len(text), piece):
        out += reader.feed(text[i:i + piece])
    return out


@pytest.mark.parametrize("piece", [1, 7, 4096, 1 << 20])
def test_the_stream_is_read_as_borgitory_writes_it_whatever_the_chunks(piece: int) -> None:
    # Borgitory 2.4.3 separates with the characters `\` `n`, not newlines: no SSE client sees a message end.
    text = SAMPLE_STREAM.read_text()
    assert "\n" not in text and "\\n\\n" in text
    messages = stream_messages(text, piece)
    assert [m["type"] for m in messages if m["type"] not in ("job_output", "keepalive")][:3] == [
        "jobs_update", "task_completed", "task_started"]
    assert sum(m["type"] in ("job_completed", "job_failed") for m in messages) == 3
    # A server that follows the SSE format (real newlines) is read the same.
    proper = "".join(f"event: {m['type']}\ndata: {json.dumps(m)}\n\n" for m in messages)
    assert stream_messages(proper, piece) == messages


def test_the_stream_skips_what_is_not_a_json_object() -> None:
    text = 'data: [1, 2]\\n\\ndata: "x"\\n\\n: comment\\n\\ndata: {"type": "keepalive"}\\n\\n'
    assert stream_messages(text, 5) == [{"type": "keepalive"}]
    from hookbus.adapters.borgitory import MAX_MESSAGE_BYTES

    garbage = "data: {" + "x" * (MAX_MESSAGE_BYTES + 10) + '\\n\\ndata: {"type": "keepalive"}'
    assert stream_messages(garbage, 65536) == [{"type": "keepalive"}]


async def follow_sample(text: str) -> list[Any]:
    """The events a follower without the database publishes for a recorded stream, as the
    journal keeps them: the first of each id (the follower publishes a job whole each time)."""
    from hookbus.adapters.borgitory import Follower, StreamMessages
    from hookbus.bus.settings import SourceSettings

    published: list[Any] = []

    async def ingest(events: list[Any]) -> None:
        published.extend(events)

    follower = Follower(SourceSettings(name="b", kind="borgitory", url="http://127.0.0.1:1"), ingest)
    for message in StreamMessages().feed(text):
        await follower.on_message(message)
    kept: dict[tuple[str, str], Any] = {}
    for event in published:
        kept.setdefault((event.source, event.id), event)
    return list(kept.values())


async def test_without_the_database_jobs_are_built_from_the_stream() -> None:
    published = await follow_sample(SAMPLE_STREAM.read_text())
    ends = {e.data["job_id"]: e.data for e in published if e.type == "backup.job.finished"}
    # The first job had ended before the stream was opened: Borgitory lists it with its outcome only.
    assert ends["21aedc0b-deb8-4fc9-8bae-f203060c7c3e"]["outcome"] == "success"
    hook = ends["040ad4e5-c01b-4f83-951e-8831cf08bbb2"]
    assert (hook["outcome"], hook["counts"]) == ("failed", {"completed": 0, "failed": 1, "skipped": 2, "total": 3})
    # A failed hook in a failed job was critical (Borgitory fails a job for nothing else but its backup);
    # the stream does not name the hook: failed_hook is the task's name.
    assert (hook["reason"], hook["failed_hook"]) == ("critical_hook", "Pre-job hooks (MyRepository)")
    backup = ends["4ef77c1d-28a9-4a0f-8282-675c028c3e2d"]
    assert (backup["outcome"], backup["reason"], backup["failed_tasks"]) == ("failed", "backup_error", ["backup"])
    assert [t["status"] for t in backup["tasks"]] == ["failed", "skipped"]
    assert all(e.source == "borgitory://b" for e in published)
    # Each task as it ended, the first time it was published (what the journal keeps).
    hook_tasks = [e.data["task"]["status"] for e in published
                  if e.type == "backup.task.finished" and e.data["job_id"] == "040ad4e5-c01b-4f83-951e-8831cf08bbb2"]
    assert hook_tasks == ["failed", "skipped", "skipped"]


@pytest.mark.parametrize("message", [
    {"type": "task_started", "job_id": "j1", "data": {"task_index": "x"}},
    {"type": "task_started", "job_id": "j1", "data": {"task_index": 10**9, "task_type": {"a": 1}}},
    {"type": "job_started", "job_id": "j1", "data": {"task_count": -5}},
    {"type": "job_failed", "job_id": "j1", "data": {"status": "exploded", "completed_at": "yesterday"}},
    {"type": "job_completed", "job_id": ["j1"], "data": None},
    {"type": "jobs_update", "jobs": [{"id": None, "status": "completed"}, "x", {"status": "failed", "id": "j2",
                                                                                  "started_at": 5}]},
])
async def test_hostile_stream_messages_are_left_out_never_fatal(message: dict[str, Any]) -> None:
    start = {"type": "job_started", "job_id": "j1", "data": {"task_count": 2}}
    text = "".join(f"data: {json.dumps(m)}\\n\\n" for m in (start, message))
    published = await follow_sample(text)
    assert published and published[0].type == "backup.job.started"  # the good message before it went through


def test_the_docs_toml_is_a_configuration_hookbus_takes(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "borgitory.md").read_text()
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "[[sources]]" in b]
    assert blocks
    for block in blocks:
        config = source_config(tmp_path, block.replace("[[sources]]\n", "", 1))
        assert [(s.kind, s.url, s.max_delay) for s in config.sources] == [("borgitory", "http://127.0.0.1:8000", 60.0)]


@pytest.mark.parametrize("database", [None, "no-such-dir/borgitory.db"])
async def test_the_follower_says_why_it_reconnects_and_goes_on(caplog: pytest.LogCaptureFixture, tmp_path: Path,
                                                              database: str | None) -> None:
    """A wrong address (a page, not a stream), then the recorded stream, which ends: the
    follower logs each, waits, connects again, and publishes what the stream says."""
    from aiohttp import web

    from hookbus.adapters.borgitory import follow
    from hookbus.bus.settings import SourceSettings

    from .conftest import local_site

    hits: list[str] = []
    published: list[Any] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        if len(hits) == 1:
            return web.Response(text="<html>Borgitory login</html>", content_type="text/html")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(SAMPLE_STREAM.read_bytes())
        return response  # and the stream ends

    async def ingest(events: list[Any]) -> None:
        published.extend(events)

    app = web.Application()
    app.router.add_get("/api/jobs/stream", stream)
    caplog.set_level("INFO", "hookbus.sources.borgitory")
    async with local_site(app) as url:
        settings = SourceSettings(name="b", kind="borgitory", url=f"http://user:pw-SECRET1@{url[7:]}", max_delay=0.2,
                                  database=tmp_path / database if database else None)
        follower = asyncio.create_task(follow(settings, ingest))
        try:
            await wait_for(lambda: len(hits) >= 3, 20, "two reconnections")
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
    assert "answered 200 text/html, not a job stream: is this Borgitory's address?" in caplog.text
    assert "following http://127.0.0.1:" in caplog.text and "pw-SECRET1" not in caplog.text
    if database:  # the database is where the jobs come from: none without it
        assert f"(cannot read {tmp_path / database}: unable to open database file); retrying in" in caplog.text
        assert published == []
        return
    assert "(the stream ended); retrying in" in caplog.text
    assert {e.data["job_id"] for e in published if e.type == "backup.job.finished"} == {
        "21aedc0b-deb8-4fc9-8bae-f203060c7c3e", "040ad4e5-c01b-4f83-951e-8831cf08bbb2", "4ef77c1d-28a9-4a0f-8282-675c028c3e2d"}


async def test_what_the_database_holds_is_untrusted_too(tmp_path: Path) -> None:
    """Rows Borgitory would not write (unknown statuses, no task type, times that are not
    times, numbers for text) leave their job out; the other jobs are published."""
    import sqlite3

    from hookbus.adapters.borgitory import Follower
    from hookbus.bus.settings import SourceSettings

    path = tmp_path / "borgitory.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript("""
            CREATE TABLE repositories (id INTEGER PRIMARY KEY, name VARCHAR);
            CREATE TABLE jobs (id VARCHAR PRIMARY KEY, repository_id INTEGER, type VARCHAR, status VARCHAR,
                               started_at DATETIME, finished_at DATETIME, error TEXT);
            CREATE TABLE job_tasks (id INTEGER PRIMARY KEY, job_id VARCHAR, task_type VARCHAR, task_name VARCHAR,
                                    status VARCHAR, started_at DATETIME, completed_at DATETIME, output TEXT,
                                    error TEXT, return_code INTEGER, task_order INTEGER);
            INSERT INTO repositories VALUES (1, 'MyRepository');
            INSERT INTO jobs VALUES ('good', 1, 'Scheduled Backup', 'failed', '2026-12-05 12:01:15.5', '2026-12-05 12:01:16', NULL);
            INSERT INTO job_tasks VALUES (1, 'good', 'hook', 'Pre-job hooks (MyRepository)', 'failed', NULL, NULL,
                '[Db: dump] ERROR: x', 'Critical hook execution failed: Db: dump: x; y', 1, 0);
            INSERT INTO jobs VALUES ('status', 1, 'Manual Backup', 'exploded', NULL, NULL, NULL);
            INSERT INTO jobs VALUES ('time', 1, 'Manual Backup', 'completed', 'yesterday', NULL, NULL);
            INSERT INTO jobs VALUES ('type', 7, 42, 'completed', NULL, NULL, x'00ff');
            INSERT INTO job_tasks VALUES (2, 'type', NULL, NULL, 'completed', NULL, NULL, 5, 6, 'x', 0);
        """)
        db.commit()
    published: list[Any] = []

    async def ingest(events: list[Any]) -> None:
        published.extend(events)

    follower = Follower(SourceSettings(name="b", kind="borgitory", url="http://127.0.0.1:1", database=path), ingest)
    await follower.catch_up()
    [end] = [e.data for e in published if e.type == "backup.job.finished"]
    assert (end["job_id"], end["job"], end["job_type"]) == ("good", "Scheduled Backup", "scheduled")
    assert (end["reason"], end["failed_hook"], end["repository"]) == ("critical_hook", "Db: dump", "MyRepository")
    assert end["started_at"] == "2026-12-05T12:01:15.500Z"


def test_check_config_lists_the_sources(tmp_path: Path) -> None:
    from .conftest import HOOKBUS

    path = tmp_path / "hookbus.toml"
    path.write_text(f'[bus]\ndata_dir = "{tmp_path / "var"}"\n\n[[sources]]\nname = "borgitory"\nkind = "borgitory"\n'
                    'url = "http://127.0.0.1:8000"\ndatabase = "/opt/borgitory/data/borgitory.db"\n')
    done = subprocess.run([*HOOKBUS, "check-config", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert ("1 source(s) followed by `hookbus serve`: borgitory (borgitory, http://127.0.0.1:8000, "
            "database /opt/borgitory/data/borgitory.db)") in done.stdout
    path.write_text(path.read_text().replace('kind = "borgitory"', 'kind = "borgitory"\nurl_typo = 1'))
    done = subprocess.run([*HOOKBUS, "check-config", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "sources[0] (borgitory).url_typo: unknown key" in done.stderr, done.stderr
