"""The `plugins` subscriber: netcfgbu plugins load unchanged; methods with or
without self, sync or async; a plugin that raises or hangs is named and does
not stop the others."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from hookbus.bus.events.event import Event
from hookbus.bus.settings import ConfigError
from hookbus.subscribers import DeliveryError, load_subscriber_config
from hookbus.subscribers.plugins import PluginsSubscriber, load_plugins

from .conftest import Site, http_ready, read_jsonl, wait_for
from .test_process import jsonl_sub, run_cli

SEED_PLUGINS = Path(__file__).parent / "fixtures" / "netcfgbu_plugins"

RECORDING = '''
import asyncio, json, os
from netcfgbu import Plugin

OUT = os.environ["PLUGIN_OUT"]

def note(*words):
    with open(OUT, "a") as f:
        f.write(" ".join(str(w) for w in words) + "\\n")

class WithSelf(Plugin):
    name = "WithSelf"
    def __init__(self):
        self.prefix = "self"
    def backup_success(self, rec, res):
        note(self.prefix, "success", rec["host"], res)
    def git_report(self, success, tag_name):
        note(self.prefix, "git", success, tag_name)

class Async(Plugin):
    async def backup_success(rec, res):
        await asyncio.sleep(0)
        note("async", "success", rec.host)
    @staticmethod
    async def report(report):
        note("async", "report", report["total"], report.task_results[False][0][0]["host"], report.duration)
'''

BROKEN = '''
import time
from netcfgbu import Plugin

class Raiser(Plugin):
    def backup_success(rec, res):
        raise ValueError("no such tenant")

class Hangs(Plugin):
    def backup_success(rec, res):
        time.sleep(3600)
'''


def device_event(type_: str, host: str, **data: Any) -> dict[str, Any]:
    return {"job_id": "run-1", "device": {"host": host, "os_name": "eos", "ipaddr": "10.0.0.1"}, **data}


async def emit(site: Site, type_: str, data: dict[str, Any]) -> None:
    done = await run_cli("emit", type_, "--data", orjson.dumps(data).decode(), "--config", str(site.config))
    assert done.returncode == 0, done.stderr


REPORT = {"job_id": "run-1", "total": 2, "ok": 1, "fail": 1, "start": "2026-11-21T03:00:00Z", "stop": "2026-11-21T03:01:00Z",
          "duration_s": 60.0, "failures": [{"host": "switch2", "error": "timeout"}]}


async def test_the_seed_example_loads_unchanged_and_prints_its_three_lines(site: Site, procs: Any) -> None:
    assert (SEED_PLUGINS / "sciencelogic.py").read_text().startswith("from netcfgbu import Plugin\n")
    site.configure([{"name": "netcfgbu", "kind": "plugins", "plugins_dir": str(SEED_PLUGINS)}])
    serve = procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    await emit(site, "backup.device.succeeded", device_event("", "switch1"))
    await emit(site, "backup.device.failed", device_event("", "switch2", error="timeout"))
    await emit(site, "backup.report", REPORT)
    await wait_for(lambda: "Backup Report" in serve.output(), 15, "the report line")
    lines = [line for line in serve.output().splitlines() if line.startswith("Backup ")]
    assert lines == ["Backup Successful", "Backup Failed", "Backup Report"]
    assert "1 plugin(s)" in serve.output() and "ScienceLogic (sciencelogic.py)" in serve.output()


async def test_a_raising_and_a_hanging_plugin_do_not_stop_the_others(site: Site, procs: Any, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(SEED_PLUGINS / "sciencelogic.py", plugins)
    (plugins / "broken.py").write_text(BROKEN)
    (plugins / "recording.py").write_text(RECORDING)
    out = tmp_path / "calls.txt"
    monkeypatch.setenv("PLUGIN_OUT", str(out))
    monkeypatch.setenv("HOOKBUS_PLUGINS_DIR", str(plugins))  # plugins_dir from the environment
    site.configure([jsonl_sub(site), {"name": "netcfgbu", "kind": "plugins", "timeout": 2}])
    serve = procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")

    started = time.monotonic()
    await emit(site, "backup.device.succeeded", device_event("", "switch1"))
    audit = site.root / "audit.jsonl"
    failed = await wait_for(lambda: [e for e in read_jsonl(audit) if e["type"] == "hookbus.delivery.failed"], 20,
                            "the failure report")
    assert time.monotonic() - started < 10
    error = failed[0]["data"]["error"]
    assert "plugin Raiser (broken.py): backup_success raised ValueError: no such tenant" in error
    assert "plugin Hangs (broken.py): backup_success did not return within 2s" in error
    assert failed[0]["data"]["attempts"] == 1  # not retried: the others must not be called twice
    assert sorted(out.read_text().splitlines()) == ["async success switch1", "self success switch1 True"]
    assert "Backup Successful" in serve.output()

    # the subscriber goes on with the next events
    await emit(site, "backup.report", REPORT)
    await emit(site, "backup.vcs.saved", {"success": True, "tag_name": "20261121_0301"})
    await wait_for(lambda: "self git True 20261121_0301" in out.read_text(), 15, "git_report")
    assert "async report 2 switch2 60.0" in out.read_text()
    assert "Backup Report" in serve.output()


async def test_job_finished_calls_backup_success_or_failed_with_the_job() -> None:
    folder = Path(__file__).parent / "fixtures" / "netcfgbu_plugins"
    sub = PluginsSubscriber(load_subscriber_config({"name": "p", "kind": "plugins", "plugins_dir": str(folder)}, 0))
    await sub.start()
    calls: list[tuple[str, Any]] = []
    sub.calls = [dataclasses.replace(c, target=(lambda hook: lambda rec, res: calls.append((hook, rec.job, res)))(c.hook),
                                     is_async=False) for c in sub.calls]
    for outcome in ("success", "warning", "failed"):
        await sub.handle(Event(id=outcome, source="s", type="backup.job.finished",
                               data={"job_id": "j", "job": "nightly", "outcome": outcome, "error": "backup failed"}))
    assert calls == [("backup_success", "nightly", True), ("backup_success", "nightly", True),
                     ("backup_failed", "nightly", "backup failed")]


def write(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def test_loading_leaves_no_netcfgbu_module_behind(tmp_path: Path) -> None:
    write(tmp_path, "a.py", "from netcfgbu.plugins import Plugin\nclass A(Plugin):\n    def report(report): pass\n")
    assert "netcfgbu" not in sys.modules
    calls = load_plugins(tmp_path)
    assert [(c.plugin, c.hook) for c in calls] == [("A (a.py)", "report")]
    assert "netcfgbu" not in sys.modules  # the stand-in exists only while plugin files load


@pytest.mark.parametrize(("source", "error"), [
    ("class P(Plugin):\n    def report(a, b, c): pass\n",
     "plugin P (bad.py): report must take (report), with or without self; it takes (a, b, c)"),
    ("class P(Plugin):\n    name = 'Pager'\n    def backup_failed(self): pass\n",
     "plugin Pager (bad.py): backup_failed must take (record, result), with or without self; it takes (self)"),
    ("class P(Plugin):\n    def __init__(self, url): pass\n    def report(self, report): pass\n",
     "plugin P (bad.py): cannot be created without arguments"),
    ("raise RuntimeError('missing credentials')\n", "plugins_dir: bad.py failed to load: RuntimeError: missing credentials"),
])
def test_a_bad_plugin_is_named_when_loaded(tmp_path: Path, source: str, error: str) -> None:
    write(tmp_path, "bad.py", "from netcfgbu import Plugin\n" + source)
    with pytest.raises(ConfigError) as info:
        load_plugins(tmp_path)
    assert error in str(info.value)


async def test_sync_calls_run_off_the_event_loop(tmp_path: Path) -> None:
    write(tmp_path, "slow.py", """
        import time
        from netcfgbu import Plugin
        class Slow(Plugin):
            def report(report):
                time.sleep(0.5)
    """)
    sub = PluginsSubscriber(load_subscriber_config({"name": "p", "kind": "plugins", "plugins_dir": str(tmp_path)}, 0))
    await sub.start()
    import asyncio

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    await sub.handle(Event(id="r", source="s", type="backup.report", data=REPORT))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert ticks >= 20  # the loop kept running while the plugin slept


def test_plugins_dir_is_required_and_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOOKBUS_PLUGINS_DIR", raising=False)
    with pytest.raises(ConfigError, match=r"subscribers\[0\] \(p\): Value error, plugins_dir: required"):
        load_subscriber_config({"name": "p", "kind": "plugins"}, 0)
    with pytest.raises(ConfigError, match="is not a directory"):
        load_subscriber_config({"name": "p", "kind": "plugins", "plugins_dir": str(tmp_path / "nope")}, 0)


async def test_failures_are_permanent_and_named(tmp_path: Path) -> None:
    write(tmp_path, "one.py", """
        from netcfgbu import Plugin
        class Good(Plugin):
            def backup_failed(rec, exc):
                pass
        class Bad(Plugin):
            async def backup_failed(rec, exc):
                raise KeyError("host")
    """)
    sub = PluginsSubscriber(load_subscriber_config({"name": "p", "kind": "plugins", "plugins_dir": str(tmp_path)}, 0))
    await sub.start()
    with pytest.raises(DeliveryError) as info:
        await sub.handle(Event(id="d", source="s", type="backup.device.failed", data={"device": {"host": "h"}, "error": "x"}))
    assert info.value.permanent and str(info.value) == "plugin Bad (one.py): backup_failed raised KeyError: 'host'"
