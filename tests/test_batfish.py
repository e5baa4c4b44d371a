"""The `batfish` subscriber with the real pybatfish against a local stand-in for
the Batfish service (tests/batfish_standin.py), in-process and inside a real
`hookbus serve`."""

from __future__ import annotations

import asyncio
import io
import sys
import threading
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hookbus.bus.events.event import new_event, parse_event
from hookbus.bus.notify.messages import render_default
from hookbus.bus.notify.templates import is_error
from hookbus.bus.settings import ConfigError
from hookbus.config import build_config
from hookbus.subscribers import DeliveryContext, DeliveryError, create
from hookbus.subscribers.batfish import BatfishSubscriber, pack_snapshot, target

from .batfish_standin import BatfishStandIn
from .conftest import Site, free_port, http_ready, local_site, read_jsonl, wait_for

VALIDATION = "backup.validation.finished"

# What pybatfish asks the service, in order, for one run of the subscriber (a
# new network; the snapshot not there yet): templates, network, snapshot upload
# and parse, then per question: upload it, queue the work, poll it, fetch the answer.
ONE_RUN = [
    "GET /v2/question_templates",
    "GET /v2/networks/{network}",
    "POST /v2/networks",
    "GET /v2/networks/{network}/snapshots",
    "POST /v2/networks/{network}/snapshots/{snapshot}",
    "POST /v2/networks/{network}/work",
    "GET /v2/networks/{network}/work/{work_id}",
] + [
    "PUT /v2/networks/{network}/questions/{question}",
    "POST /v2/networks/{network}/work",
    "GET /v2/networks/{network}/work/{work_id}",
    "GET /v2/networks/{network}/questions/{question}/answer",
] * 4

CLEAN = {"r1.cfg": "hostname r1\nip access-list extended MGMT\ninterface Gi0/1\n ip access-group MGMT in\n",
         "r2.cfg": "hostname r2\n"}


@pytest.fixture
async def batfish() -> AsyncIterator[BatfishStandIn]:
    standin = BatfishStandIn()
    async with local_site(standin.app()) as url:
        standin.url = url.removeprefix("http://")
        yield standin
        standin.hang = False  # a check left behind by a timeout can finish and end its thread
        await wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith("batfish-")], 10,
                       "pybatfish threads to end")


def configs(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def subscriber(host: str, configs_dir: Path, **more: Any) -> BatfishSubscriber:
    config = build_config({"subscribers": [{"name": "bf", "kind": "batfish", "host": host,
                                            "configs_dir": str(configs_dir), **more}]}, "test")
    sub = create(config.subscribers[0])
    assert isinstance(sub, BatfishSubscriber)
    return sub


async def test_end_to_end_in_hookbus_serve(site: Site, procs: Any, batfish: BatfishStandIn, tmp_path: Path) -> None:
    folder = configs(tmp_path / "configs", CLEAN)
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")  # netcfgbu's vcs: not a config
    site.configure([{"name": "audit", "kind": "jsonl", "path": str(site.root / "events.jsonl")},
                    {"name": "netcheck", "kind": "batfish", "host": batfish.url, "network": "lab",
                     "configs_dir": str(folder), "timeout": 30, "retry": {"attempts": 1}}])
    procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to answer")

    def results() -> list[dict[str, Any]]:
        return [e for e in read_jsonl(site.root / "events.jsonl") if e["type"] == VALIDATION]

    async def report(job_id: str) -> None:
        import aiohttp

        event = {"specversion": "1.0", "id": f"report-{job_id}", "source": "netcfgbu://lab", "type": "backup.report",
                 "data": {"job_id": job_id, "total": 2, "ok": 2, "fail": 0}}
        async with aiohttp.ClientSession() as s, s.post(f"{site.url}/events", json=event) as r:
            assert r.status == 202

    await report("run-1")
    first = (await wait_for(results, 30, "the first validation result"))[0]
    data = first["data"]
    assert data["job_id"] == "run-1" and data["validator"] == "batfish" and data["subscriber"] == "netcheck"
    assert data["outcome"] == "success" and data["reason"] is None and not is_error(first)
    assert data["summary"] == "Batfish: 2 config file(s) loaded, no errors"
    assert data["details"]["files"] == 2 and data["details"]["network"] == "lab"
    assert data["details"]["snapshot"] == "hookbus-netcheck"
    assert batfish.requests == ONE_RUN
    assert all(h.get("X-Batfish-Version") and h.get("X-Batfish-Apikey") for h in batfish.headers)
    assert set(batfish.snapshots[("lab", "hookbus-netcheck")]) == {"configs/r1.cfg", "configs/r2.cfg"}

    # The next backup brings an undefined ACL, an unrecognised line and an empty file.
    configs(folder, {"r2.cfg": "hostname r2\ninterface Gi0/2\n ip access-group MISSING in\nbogus stanza\n", "r3.cfg": ""})
    await report("run-2")
    second = (await wait_for(lambda: len(results()) == 2 and results(), 30, "the second validation result"))[1]
    data = second["data"]
    assert data["job_id"] == "run-2" and data["outcome"] == "failed" and data["reason"] == "findings" and is_error(second)
    assert data["summary"] == ("Batfish found 2 error(s) in 3 config file(s): 1 file(s) failed to parse or empty, "
                               "1 undefined reference(s); 3 warning(s)")
    assert data["findings"][:2] == ["configs/r3.cfg: parse status EMPTY",
                                    "configs/r2.cfg:3: undefined ipv4 acl 'MISSING' (interface incoming filter)"]
    assert "configs/r2.cfg:4: parse warning: bogus stanza (This syntax is unrecognized)" in data["findings"]
    assert data["details"]["counts"]["undefinedReferences"] == {"errors": 1, "warnings": 0}
    assert data["details"]["rows"]["undefinedReferences"][0]["Ref_Name"] == "MISSING"
    message = render_default(parse_event(second))
    assert message.startswith("❌ Validation failed (batfish)\n\nBatfish found 2 error(s)")
    assert "Reason: findings\n\nFindings:\n- configs/r3.cfg: parse status EMPTY\n" in message
    assert message.endswith("\nJob ID: run-2")
    # The second run replaced the snapshot: list, delete, upload again.
    assert batfish.requests[len(ONE_RUN):len(ONE_RUN) + 5] == [
        "GET /v2/question_templates", "GET /v2/networks/{network}", "GET /v2/networks/{network}/snapshots",
        "DELETE /v2/networks/{network}/snapshots/{snapshot}", "POST /v2/networks/{network}/snapshots/{snapshot}"]


async def test_a_check_that_outlasts_the_timeout_reports_timeout(batfish: BatfishStandIn, tmp_path: Path) -> None:
    batfish.hang = True
    sub = subscriber(batfish.url, configs(tmp_path / "c", CLEAN), timeout=1.5)
    started = asyncio.get_running_loop().time()
    result = await sub.run_checks()
    assert result.outcome == "failed" and result.reason == "timeout"
    assert result.summary == "Batfish checks did not finish within 1.5s"
    assert asyncio.get_running_loop().time() - started < 3


async def test_a_snapshot_batfish_cannot_load_is_snapshot_failed(batfish: BatfishStandIn, tmp_path: Path) -> None:
    sub = subscriber(batfish.url, configs(tmp_path / "c", {"r9.cfg": "hostname r9\n!! crash\n"}))
    result = await sub.run_checks()
    assert result.outcome == "failed" and result.reason == "snapshot_failed"
    assert result.summary == "Batfish could not load the 1 config file(s) as a snapshot"
    assert any("boom in r9.cfg" in line for line in result.findings)


async def test_unparseable_config_is_an_error_and_warnings_alone_pass(batfish: BatfishStandIn, tmp_path: Path) -> None:
    sub = subscriber(batfish.url, configs(tmp_path / "c", {"r1.cfg": "hostname r1\n!! unparseable\n"}),
                     questions=["initIssues", "fileParseStatus"])
    result = await sub.run_checks()
    assert result.outcome == "failed" and result.findings[0] == "Parse error: Error parsing configuration file (configs/r1.cfg:2)"
    assert result.details["counts"] == {"initIssues": {"errors": 1, "warnings": 0},
                                        "fileParseStatus": {"errors": 1, "warnings": 0}}
    warned = subscriber(batfish.url, configs(tmp_path / "w", {"r1.cfg": "hostname r1\nbogus\n"}))
    result = await warned.run_checks()
    assert result.outcome == "success" and result.summary == "Batfish: 1 config file(s) loaded, no errors; 3 warning(s)"


async def test_no_configs_is_a_failed_validation(batfish: BatfishStandIn, tmp_path: Path) -> None:
    empty = configs(tmp_path / "none", {})
    (empty / ".gitignore").write_text("*.tmp\n")
    result = await subscriber(batfish.url, empty).run_checks()
    assert result.outcome == "failed" and result.reason == "no_configs"
    result = await subscriber(batfish.url, tmp_path / "missing").run_checks()
    assert result.reason == "no_configs" and "is not a directory" in result.summary
    assert batfish.requests == []  # nothing was sent


async def test_an_unreachable_service_is_a_retryable_delivery_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    sub = subscriber(f"127.0.0.1:{port}", configs(tmp_path / "c", CLEAN))
    event = new_event("backup.report", {"job_id": "run-3"}, source="netcfgbu://lab")
    with pytest.raises(DeliveryError) as exc:
        await sub.handle(event)
    assert not exc.value.permanent and f"127.0.0.1:{port} not reachable" in str(exc.value)


async def test_a_validation_result_never_triggers_another(batfish: BatfishStandIn, tmp_path: Path) -> None:
    sub = subscriber(batfish.url, configs(tmp_path / "c", CLEAN), events=["*"])
    published: list[Any] = []

    async def publish(events: list[Any]) -> list[dict[str, Any]]:
        published.extend(events)
        return [{"id": e.id, "seq": 1, "duplicate": False} for e in events]

    sub.bind(DeliveryContext(sub.name, publish=publish))
    trigger = new_event("backup.report", {"job_id": "run-4"}, source="netcfgbu://lab")
    trigger.seq = 12
    await sub.handle(trigger)
    [result] = published
    assert result.type == VALIDATION and result.data["trigger"]["seq"] == 12 and result.data["job_id"] == "run-4"
    await sub.handle(result)  # its own result comes back to it (events = ["*"]): nothing happens
    assert len(published) == 1
    await sub.handle(trigger)  # a redelivery: a new run, but the same identity
    assert [e.id for e in published] == [result.id, result.id] and published[1].source == result.source


def test_pack_snapshot_layouts(tmp_path: Path) -> None:
    flat = configs(tmp_path / "flat", {"r1.cfg": "a", "r2.cfg": "b"})
    (flat / ".git").mkdir()
    (flat / ".git" / "config").write_text("x")
    data, count = pack_snapshot(flat)
    assert count == 2
    assert sorted(zipfile.ZipFile(io.BytesIO(data)).namelist()) == ["snapshot/configs/r1.cfg", "snapshot/configs/r2.cfg"]
    whole = configs(tmp_path / "whole" / "configs", {"r1.cfg": "a"}).parent
    configs(whole / "hosts", {"h1.json": "{}"})
    data, count = pack_snapshot(whole)
    assert count == 1
    assert sorted(zipfile.ZipFile(io.BytesIO(data)).namelist()) == ["snapshot/configs/r1.cfg", "snapshot/hosts/h1.json"]


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    def error(**table: Any) -> str:
        with pytest.raises(ConfigError) as exc:
            build_config({"subscribers": [{"name": "bf", "kind": "batfish", "configs_dir": str(tmp_path), **table}]}, "t")
        return str(exc.value)

    assert error(host="ftp://x").startswith("subscribers[0] (bf).host: ")
    assert "subscribers[0] (bf).host: " in error(host="batfish:99999")
    assert "subscribers[0] (bf).network: " in error(network="my net")
    assert "subscribers[0] (bf).questions[0]: " in error(questions=["routes"])
    assert "lists a question twice" in error(questions=["initIssues", "initIssues"])
    assert "subscribers[0] (bf).questions: " in error(questions=[])
    with pytest.raises(ConfigError, match=r"subscribers\[0\] \(bf\)\.configs_dir: Field required"):
        build_config({"subscribers": [{"name": "bf", "kind": "batfish"}]}, "t")
    assert target("batfish.example") == ("batfish.example", 9996, False)
    assert target("https://batfish.example:8443") == ("batfish.example", 8443, True)


def test_missing_pybatfish_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = build_config({"subscribers": [{"name": "bf", "kind": "batfish", "configs_dir": str(tmp_path)}]}, "t")
    monkeypatch.setitem(sys.modules, "pybatfish", None)  # what an import finds when it is not installed
    with pytest.raises(ConfigError, match=r"pybatfish is not installed; install it with: pip install 'hookbus\[batfish\]'"):
        create(config.subscribers[0])
