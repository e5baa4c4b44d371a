"""Trust boundaries, data (issue items 8, 10, 11): secrets out of events and dead
letters, owner-only files, refused key files and plugins, hashed ping keys, and
the journal's operation (reset, two runners, corruption, clock, metrics, REPLAY).

Each test drives a real `hookbus serve` (or the real command) where the item is
about the running system, and waits on conditions with deadlines."""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from hookbus.adapters import netcfgbu_plugin
from hookbus.bus.secrets import scrub
from hookbus.bus.settings import BusSettings
from hookbus.bus.store.journal import Journal
from hookbus.config import build_config

from .conftest import HOOKBUS, Proc, Site, cloudevent, http_ready, read_jsonl, wait_for

TOKEN = "tok-Q9xV27mZpLk4Rw8s"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def start(procs: Callable[..., Proc], site: Site) -> Proc:
    proc = procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 30, f"hookbus serve on {site.url}\n{proc.output()}")
    return proc


async def post(site: Site, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(site.url + path, data=orjson.dumps(body),
                                                    headers={"Content-Type": "application/json", **(headers or {})}) as r:
        return r.status, await r.json(content_type=None)


async def get(site: Site, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(site.url + path) as r:
        return r.status, await r.text()


def run_hookbus(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HOOKBUS, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


# -- 10. secrets ---------------------------------------------------------------------------------

async def test_secrets_never_reach_the_journal_from_any_way_in(site: Site, procs: Callable[..., Proc],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKBUS_TRUST_TOKEN", TOKEN)
    site.configure([{"name": "audit", "kind": "jsonl", "path": str(site.root / "var" / "events.jsonl")},
                    {"name": "hook", "kind": "webhook", "url": "http://127.0.0.1:9/x",
                     "headers": {"X-Token": "env:HOOKBUS_TRUST_TOKEN"}}])
    await start(procs, site)
    record = {"host": "sw1", "os_name": "eos", "ssh_pass": "sshpw-111", "authpass": "authpw-222",
              "privpass": "privpw-333", "pwd": "pwd-444", "snmp_auth": "snmpauth-555", "login": "admin:loginpw-666",
              "mgmt": "ssh://admin:urlpw-777@sw1"}
    status, _ = await post(site, "/ingest/netcfgbu", {"hook": "backup_failed", "job_id": "r1", "record": record,
                                                      "result": "auth failed for ssh://admin:errpw-888@sw1"})
    assert status == 202
    status, _ = await post(site, "/ingest/netcfgbu", {
        "hook": "report", "job_id": "r1", "ok": [],
        "failed": [{"record": record, "error": "login failed: password=errpw-999"}]})
    assert status == 202
    basic = base64.b64encode(f"backup:{TOKEN}".encode()).decode()
    curl = f"> GET / HTTP/1.1\n> Authorization: Basic {basic}\n< 401\nfirst part {TOKEN[:12]} of it"
    status, _ = await post(site, "/events", cloudevent(1, type_="backup.log", message=curl))
    assert status == 202
    _, text = await get(site, "/api/events?limit=100")
    for secret in ("sshpw-111", "authpw-222", "privpw-333", "pwd-444", "snmpauth-555", "loginpw-666", "urlpw-777",
                   "errpw-888", "errpw-999", TOKEN[:12], basic[8:20]):
        assert secret not in text, secret
    events = orjson.loads(text)["events"]
    assert events[0]["data"]["device"]["login"] == "admin:***"
    assert events[0]["data"]["device"]["host"] == "sw1"


def test_dead_letter_text_and_logs_lose_secret_prefixes_and_base64() -> None:
    from hookbus.bus import secrets as redact

    build_config({"subscribers": [{"name": "h", "kind": "webhook", "url": "http://127.0.0.1:9/",
                                   "headers": {"X-Token": TOKEN}}]}, "test")
    redact.remember(TOKEN)
    assert TOKEN[:12] not in scrub(f"sh: ${{TOKEN:0:12}} is {TOKEN[:12]}")
    basic = base64.b64encode(f"backup:{TOKEN}".encode()).decode()
    assert basic[8:] not in scrub(f"echo {basic}")  # base64 anywhere, not only after Authorization:
    assert scrub("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
    assert scrub("curl -u backup:pw123 https://h") == "curl -u backup:*** https://h"
    assert scrub("3 passed, 0 failed; passed: 3") == "3 passed, 0 failed; passed: 3"


def test_the_netcfgbu_file_drops_the_keys_hookbus_drops() -> None:
    from hookbus.bus import secrets as redact

    # The plugin file runs alone inside netcfgbu's Python: it carries the rule's text, held equal here.
    assert netcfgbu_plugin.SECRET_KEY.pattern == redact.SECRET_KEY.pattern
    assert netcfgbu_plugin.SECRET_KEY.flags == redact.SECRET_KEY.flags
    data = netcfgbu_plugin.device_data("j", {"host": "sw1", "ssh_pass": "x", "authpass": "y", "login": "a:b"}, "TIMEOUT", False)
    assert data["device"] == {"host": "sw1", "login": "a:***"}


# -- 11. files -----------------------------------------------------------------------------------

async def test_files_are_owner_only_and_looser_ones_are_tightened(site: Site, procs: Callable[..., Proc]) -> None:
    data_dir = site.root / "var"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    old = data_dir / "old-state"
    old.write_text("x")
    os.chmod(old, 0o644)
    site.configure([{"name": "audit", "kind": "jsonl", "path": str(data_dir / "events.jsonl")}])
    proc = await start(procs, site)
    assert (await post(site, "/events", cloudevent(1)))[0] == 202
    await wait_for(lambda: read_jsonl(data_dir / "events.jsonl"), 15, "the event in the jsonl file")
    assert mode(data_dir) == 0o700
    assert mode(old) == 0o600
    for name in ("journal.db", "events.jsonl"):
        assert mode(data_dir / name) == 0o600, name
    assert "now owner-only" in proc.output()


def test_a_world_readable_curve_key_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "broker.key_secret"
    key.write_text('public-key = "x"\nsecret-key = "y"\n')
    os.chmod(key, 0o644)
    (tmp_path / "hookbus.toml").write_text(f'[bus]\ncurve_secret_key = "file:{key}"\n')
    out = run_hookbus("check-config", "--config", str(tmp_path / "hookbus.toml"), cwd=tmp_path)
    assert out.returncode == 2
    assert f"bus.curve_secret_key: {key} holds a secret key and is readable by other users (mode 0644)" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_world_writable_plugins_folder_or_file_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    plugin = folder / "p.py"
    plugin.write_text("from netcfgbu import Plugin\nclass P(Plugin):\n    def report(report): pass\n")
    config = tmp_path / "hookbus.toml"
    config.write_text(f'[[subscribers]]\nname = "p"\nkind = "plugins"\nplugins_dir = "{folder}"\n')
    for path, loose in ((folder, 0o777), (plugin, 0o666)):
        os.chmod(folder, 0o755)
        os.chmod(plugin, 0o644)
        os.chmod(path, loose)
        out = run_hookbus("check-config", "--config", str(config), cwd=tmp_path)
        assert out.returncode == 2, out
        assert f"{path} is writable by every user (mode {loose:04o})" in out.stderr


async def test_ping_keys_are_stored_hashed_and_old_rows_are_migrated(site: Site, procs: Callable[..., Proc]) -> None:
    from hookbus.bus.store.openjobs import hash_key

    key = "5f0a1c2e-9a7b-4c3d-8e1f-123456789abc"
    site.configure([])
    with site.config.open("a") as f:
        f.write(f'\n[[checks]]\nkey = "{key}"\njob = "nightly"\n')
    proc = await start(procs, site)
    async with aiohttp.ClientSession() as s, s.get(f"{site.url}/ping/{key}/start") as r:
        assert r.status == 200
    proc.stop()
    db = site.root / "var" / "journal.db"
    assert key.encode() not in db.read_bytes()
    keys = [k for (k,) in sqlite3.connect(db).execute("SELECT key FROM adapter_jobs")]
    assert keys == [hash_key(f"ping:{key}:")]
    # a row an older version wrote in plain text is hashed when the journal opens
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO adapter_jobs VALUES ('ping:plain-key:', 'j', 't', 0)")
    Journal(db).close()
    keys = [k for (k,) in sqlite3.connect(db).execute("SELECT key FROM adapter_jobs")]
    assert "ping:plain-key:" not in keys and hash_key("ping:plain-key:") in keys


# -- 8. durability and operation -------------------------------------------------------------------

async def test_jsonl_after_the_journal_was_emptied_writes_every_new_event(site: Site, procs: Callable[..., Proc]) -> None:
    path = site.root / "var" / "events.jsonl"
    site.configure([{"name": "audit", "kind": "jsonl", "path": str(path)}])
    proc = await start(procs, site)
    for i in range(5):
        assert (await post(site, "/events", cloudevent(i)))[0] == 202
    await wait_for(lambda: len(read_jsonl(path)) == 5, 15, "5 lines")
    proc.stop()
    for name in ("journal.db", "journal.db-wal", "journal.db-shm"):
        (site.root / "var" / name).unlink(missing_ok=True)
    proc = await start(procs, site)
    for i in range(3):
        assert (await post(site, "/events", cloudevent(100 + i)))[0] == 202
    await wait_for(lambda: [e["id"] for e in read_jsonl(path)] == [cloudevent(100 + i)["id"] for i in range(3)], 15,
                   f"the 3 new events in a new file\n{proc.output()}")
    aside = [p for p in path.parent.glob("events.jsonl.2*")]
    assert len(aside) == 1 and len(read_jsonl(aside[0])) == 5
    assert "moved aside" in proc.output()


async def test_a_second_runner_of_one_subscriber_is_refused(site: Site, procs: Callable[..., Proc]) -> None:
    site.configure([{"name": "audit", "kind": "jsonl", "path": str(site.root / "var" / "events.jsonl")}])
    proc = await start(procs, site)
    await wait_for(lambda: "subscriber audit (jsonl): starting" in proc.output(), 20, "serve's own audit runner")
    out = run_hookbus("subscriber", "audit", "--config", str(site.config), cwd=site.root)
    assert out.returncode == 1, out
    assert "subscriber audit is already running (" in out.stderr and "pid " in out.stderr


async def test_a_corrupted_journal_is_a_503_or_one_line_at_start(site: Site, procs: Callable[..., Proc]) -> None:
    site.configure([])
    proc = await start(procs, site)
    async with aiohttp.ClientSession() as s:
        for start_at in range(0, 2000, 200):
            batch = [cloudevent(i, message="m" * 2000) for i in range(start_at, start_at + 200)]
            async with s.post(site.url + "/events", data=orjson.dumps(batch),
                              headers={"Content-Type": "application/cloudevents-batch+json"}) as r:
                assert r.status == 202
    proc.stop()
    db = site.root / "var" / "journal.db"
    size = db.stat().st_size
    with db.open("r+b") as f:  # pages in the middle of the events table: the header and the last pages stay whole
        f.seek(size // 4)
        f.write(os.urandom(size // 4))
    proc = await start(procs, site)
    status, text = await get(site, "/api/events?limit=1000")
    assert status == 503, text
    assert orjson.loads(text)["error"].startswith("the journal cannot be read")
    proc.stop()
    with db.open("r+b") as f:
        f.write(b"garbage" * 20)  # the header
    out = run_hookbus("serve", "--config", str(site.config), cwd=site.root)
    assert out.returncode == 1
    assert f"journal {db} cannot be opened" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


async def test_a_retry_is_not_put_off_when_the_clock_went_back(site: Site, procs: Callable[..., Proc],
                                                               receiver: Any) -> None:
    from .conftest import free_port

    dead_port = free_port()
    site.configure([{"name": "hook", "kind": "webhook", "url": f"http://127.0.0.1:{dead_port}/",
                     "retry": {"attempts": 20, "initial_delay": 3, "max_delay": 3}}])
    proc = await start(procs, site)
    assert (await post(site, "/events", cloudevent(1)))[0] == 202
    db = site.root / "var" / "journal.db"
    await wait_for(lambda: sqlite3.connect(db).execute("SELECT COUNT(*) FROM retries").fetchone()[0], 20, "a retry")
    proc.stop()
    # Restarted with the clock a day behind: the stored deadline is a day away.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE retries SET next_at = ?", (time.time() + 86400,))
    site.config.write_text(site.config.read_text().replace(f"http://127.0.0.1:{dead_port}/", receiver.url))
    await start(procs, site)
    await wait_for(lambda: receiver.received, 15, "the retried delivery")


async def test_metrics_escape_label_values(site: Site, procs: Callable[..., Proc]) -> None:
    """A name that would write a metric line of its own: refused by the control socket's checks (even with the
    operate credential), and escaped by /metrics should one ever get through."""
    from hookbus.bus.http.api import label
    from hookbus.bus.transport import protocol
    from hookbus.bus.transport.client import BrokerRefused, ControlClient

    site.configure([])
    await start(procs, site)
    client = ControlClient(BusSettings(control=site.control, publish=site.publish, data_dir=site.root / "var"))
    try:
        with pytest.raises(BrokerRefused, match="name"):
            await client.request(protocol.HELLO, {"name": 'x"} 0\nhookbus_journal_head_seq 999999'}, timeout=10)
    finally:
        client.close()
    status, text = await get(site, "/metrics")
    assert status == 200 and "hookbus_journal_head_seq 999999" not in text.splitlines()
    assert label('x"} 0\nhookbus_journal_head_seq 999999') == 'x\\"} 0\\nhookbus_journal_head_seq 999999'


async def test_a_huge_replay_does_not_fail_concurrent_ingests(site: Site, procs: Callable[..., Proc]) -> None:
    """The largest REPLAY the control socket takes goes in chunks beside 185 ingests; a larger one is refused."""
    from hookbus.bus.transport import protocol
    from hookbus.bus.transport.client import BrokerRefused, ControlClient
    from hookbus.bus.transport.commands import MAX_IDS

    site.configure([])
    await start(procs, site)
    client = ControlClient(BusSettings(control=site.control, publish=site.publish, data_dir=site.root / "var"))
    try:
        replay = asyncio.create_task(client.request(protocol.REPLAY, {"ids": list(range(1, MAX_IDS + 1))}, timeout=60))
        results = await asyncio.gather(*(post(site, "/events", cloudevent(i)) for i in range(185)))
        info, _ = await replay
        with pytest.raises(BrokerRefused, match="ids"):
            await client.request(protocol.REPLAY, {"ids": list(range(1, MAX_IDS + 2))}, timeout=60)
    finally:
        client.close()
    assert info == {"queued": 0}
    assert [status for status, _ in results] == [202] * 185

async def test_commands_hookbus_runs_keep_the_umask_it_was_started_with(site: Site) -> None:
    """hookbus's own files are 0600, but a backup tool or hook it runs creates files as its user expects."""
    out = site.root / "made-by-hook"
    site.configure([])
    site.config.write_text(site.config.read_text() + f'''
[[jobs]]
name = "modes"
repository = "R"
backup = "touch {out}"
''')
    done = subprocess.run(["sh", "-c", f"umask 022 && exec {' '.join(HOOKBUS)} run modes --timeout 0 --config {site.config}"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert not [p for p in (site.root / "var").rglob("*") if p.stat().st_mode & 0o077]
