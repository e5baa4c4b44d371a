"""Inbound adapters, in-process over a real journal and broker: each tool's real
payloads (tests/samples/) give the canonical events, malformed ones a 400
naming the field, and the ping API pairs a start with its finish.

Where the samples come from: `borgmatic-2.1-*.txt` are the bodies borgmatic
2.1.10's healthchecks hook posted in a real run (with borg 1.2); `restic-0.14-*`
are real `restic backup --json` outputs of restic 0.14 (and its stderr when the
repository is missing); `restic-0.17-*` follow restic's documented JSON lines
(doc/075_scripting.rst: `error` with `error.message`, `exit_error`,
`backup_start`/`backup_end`); `borgitory-status-api-*` have the shape of
Borgitory's `GET /api/jobs/{id}/status` (`tasks` is a count), `borgitory-job-*`
the task list of its job details (BorgJobTask fields); `backrest-*` are what the
Backrest hook template of docs/backrest.md renders from Backrest's HookVars (SnapshotStats
is restic.BackupProgressEntry as Go's json.Marshal writes it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import zmq.asyncio
from aiohttp.test_utils import TestClient

from hookbus.app import create_app
from hookbus.bus import secrets
from hookbus.bus.settings import ConfigError
from hookbus.bus.store.base import Store
from hookbus.bus.store.journal import Journal
from hookbus.bus.store.postgres import PostgresStore
from hookbus.bus.transport.broker import Broker
from hookbus.config import Config, build_config

SAMPLES = Path(__file__).parent / "samples"
UUID_KEY = "5f0a1c2e-9a7b-4c3d-8e1f-123456789abc"
CHECKS = [{"key": UUID_KEY, "job": "nightly", "repository": "MyRepository"},
          {"key": "db-dump", "job": "db-dump", "repository": "pg"}]


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def subset(actual: Any, expected: Any, path: str = "") -> None:
    """Every key of `expected` is in `actual` with that value (recursively)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} is not an object"
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} missing in {actual!r}"
            subset(actual[key], value, f"{path}.{key}")
    elif isinstance(expected, list) and expected and isinstance(expected[0], dict):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            subset(a, e, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


@dataclass
class Bus:
    client: TestClient  # type: ignore[type-arg]
    journal: Store
    config: Config

    async def ingest(self, adapter: str, body: bytes, query: str = "") -> tuple[int, Any]:
        resp = await self.client.post(f"/ingest/{adapter}{query}", data=body, headers={"Content-Type": "application/json"})
        return resp.status, await resp.json()

    async def ping(self, path: str, body: bytes | None = None, method: str = "POST") -> tuple[int, str, Any]:
        resp = await self.client.request(method, f"/ping/{path}", data=body)
        return resp.status, await resp.text(), resp.headers

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        stored, _ = self.journal.read(after, 1000)
        return [{**orjson.loads(e.body), "seq": e.seq} for e in stored]


def make_config(data_dir: Path, **extra: Any) -> Config:
    return build_config({
        "bus": {"data_dir": str(data_dir), "control": "tcp://127.0.0.1:*", "publish": "tcp://127.0.0.1:*",
                "synchronous": "NORMAL"},
        "checks": CHECKS, **extra,
    }, "test")


@pytest.fixture(autouse=True)
def _forget_secrets() -> Any:
    saved = set(secrets.known_secrets())
    yield
    secrets.known_secrets().clear()
    secrets.known_secrets().update(saved)


@pytest.fixture(params=["sqlite", "postgres"])
async def bus(tmp_path: Path, aiohttp_client: Any, request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    """The adapters in front of a broker on each store (their open jobs: append_with_job)."""
    config = make_config(tmp_path / "var")
    journal: Store = (PostgresStore(request.getfixturevalue("pg_url")) if request.param == "postgres"
                      else Journal(config.bus.data_dir / "journal.db", synchronous="NORMAL"))
    ctx = zmq.asyncio.Context()
    broker = Broker(config, journal, ctx)
    await broker.start()
    client = await aiohttp_client(create_app(config, broker))
    yield Bus(client, journal, config)
    await broker.stop()
    journal.close()
    ctx.term()


# -- good payloads: (adapter, sample, query, [(type, data subset)]) ---------------------------

RESTIC_STATS = {"snapshot_id": "21de6344", "files_new": 4, "files_changed": 0, "files_unmodified": 0,
                "data_added": 62094, "total_files_processed": 4, "duration_s": 0.211}

GOOD = [
    ("restic", "restic-0.14-first-backup.jsonl", "?job=nightly&repository=MyRepository", [
        ("backup.job.finished", {"job": "nightly", "repository": "MyRepository", "outcome": "success", "reason": None,
                                 "error": None, "snapshot_id": "21de6344", "stats": RESTIC_STATS, "duration_s": 0.211}),
    ]),
    ("restic", "restic-0.14-second-backup.jsonl", "", [
        ("backup.job.finished", {"outcome": "success", "stats": {"snapshot_id": "204f65ff", "files_new": 0, "files_changed": 1,
                                                                 "files_unmodified": 3, "data_added": 2103}}),
    ]),
    ("restic", "restic-0.14-missing-repository.txt", "?exit_status=1", [
        ("backup.job.finished", {"outcome": "failed", "reason": "backup_error", "exit_status": 1, "snapshot_id": None,
                                 "error": "Fatal: unable to open config file: stat missing/config: no such file or directory"}),
    ]),
    ("restic", "restic-0.14-skipped-source-2to1.txt", "", [
        ("backup.job.finished", {"outcome": "success", "output_tail": "nothere does not exist, skipping",
                                 "stats": {"snapshot_id": "eec85130", "files_unmodified": 4}}),
    ]),
    ("restic", "restic-0.17-partial-with-errors.jsonl", "?exit_status=3", [
        ("backup.job.finished", {"outcome": "warning", "errors": 1, "exit_status": 3,
                                 "error": "open /srv/data/locked.db: permission denied",
                                 "started_at": "2026-11-21T02:30:00.123Z", "finished_at": "2026-11-21T02:30:02.623Z",
                                 "duration_s": 2.5, "stats": {"data_added_packed": 41210, "files_new": 3}}),
    ]),
    ("restic", "restic-0.17-exit-error.jsonl", "", [
        ("backup.job.finished", {"outcome": "failed", "error": "Fatal: repository does not exist: unable to open config file: "
                                                               "stat /srv/restic-repo/config: no such file or directory"}),
    ]),
    ("restic", "restic-0.17-dry-run.jsonl", "", [
        ("backup.job.finished", {"outcome": "success", "snapshot_id": None, "stats": {"dry_run": True, "files_new": 1}}),
    ]),
    ("borgitory", "borgitory-status-api-completed.json", "?repository=MyRepository", [
        ("backup.job.started", {"job_id": "0b7c9e4e-5d61-4c1e-9a5e-2f1e8d7c6b5a", "repository": "MyRepository",
                                "job_type": "composite", "tasks_total": 5, "started_at": "2026-11-21T03:00:00.120Z"}),
        ("backup.job.finished", {"job_id": "0b7c9e4e-5d61-4c1e-9a5e-2f1e8d7c6b5a", "outcome": "success", "counts": None,
                                 "tasks_total": 5, "exit_status": 0, "duration_s": 252.878}),
    ]),
    ("borgitory", "borgitory-status-api-running.json", "", [
        ("backup.job.started", {"job_id": "0b7c9e4e-5d61-4c1e-9a5e-2f1e8d7c6b5a"}),
    ]),
    ("borgitory", "borgitory-job-success.json", "", [
        ("backup.job.started", {"job_id": "5e3b2a10-7f4d-4d2b-8c1a-0e9f8d7c6b5a", "repository": "MyRepository",
                                "tasks": [{"name": "Pre-job hooks (MyRepository)", "kind": "hook", "phase": "pre"},
                                          {"kind": "backup", "phase": "main"}, {"kind": "prune"}, {"kind": "compact"},
                                          {"kind": "hook", "phase": "post"}, {"kind": "check"}, {"kind": "notification"}]}),
        *[(t, {"task": {"index": i}}) for i in range(7) for t in ("backup.task.started", "backup.task.finished")],
        ("backup.job.finished", {"outcome": "success", "reason": None, "counts": {"completed": 7, "failed": 0, "skipped": 0, "total": 7},
                                 "failed_tasks": []}),
    ]),
    ("borgitory", "borgitory-job-critical-hook-failed.json", "", [
        ("backup.job.started", {}),
        ("backup.task.started", {"task": {"index": 0, "status": "running"}}),
        ("backup.task.finished", {"task": {"index": 0, "kind": "hook", "phase": "pre", "status": "failed", "critical": True,
                                           "exit_code": 1, "failed_hook": "Database Dump",
                                           "output_tail": "[Database Dump] ERROR: pg_dump: error: connection to server failed"}}),
        ("backup.task.started", {"task": {"index": 1}}),
        ("backup.task.finished", {"task": {"index": 1, "kind": "backup", "status": "skipped",
                                           "message": "Task skipped due to critical hook failure"}}),
        ("backup.task.started", {"task": {"index": 2}}),
        ("backup.task.finished", {"task": {"index": 2, "status": "skipped"}}),
        ("backup.task.started", {"task": {"index": 3}}),
        ("backup.task.finished", {"task": {"index": 3, "phase": "post", "status": "completed"}}),
        ("backup.task.started", {"task": {"index": 4}}),
        ("backup.task.finished", {"task": {"index": 4, "kind": "notification"}}),
        ("backup.job.finished", {"outcome": "failed", "reason": "critical_hook", "failed_hook": "Database Dump",
                                 "counts": {"completed": 2, "failed": 1, "skipped": 2, "total": 5}, "exit_status": 1}),
    ]),
    ("borgitory", "borgitory-job-noncritical-hook-warning.json", "", [
        ("backup.job.started", {}),
        *[(t, {"task": {"index": i}}) for i in range(3) for t in ("backup.task.started", "backup.task.finished")],
        ("backup.job.finished", {"outcome": "warning", "reason": None, "failed_tasks": ["hook"],
                                 "counts": {"completed": 2, "failed": 1, "skipped": 0, "total": 3}}),
    ]),
    ("borgitory", "borgitory-job-backup-failed.json", "", [
        ("backup.job.started", {}),
        *[(t, {"task": {"index": i}}) for i in range(3) for t in ("backup.task.started", "backup.task.finished")],
        ("backup.job.finished", {"outcome": "failed", "reason": "backup_error", "error": "Backup failed", "failed_tasks": ["backup"],
                                 "counts": {"completed": 1, "failed": 1, "skipped": 1, "total": 3}}),
    ]),
    ("backrest", "backrest-snapshot-success.json", "", [
        ("backup.task.finished", {"condition": "CONDITION_SNAPSHOT_SUCCESS", "repository": "MyRepository", "plan": "nightly",
                                  "task": {"kind": "backup", "status": "completed", "name": 'backup for plan "nightly"',
                                           "duration_s": 12.5}}),
        ("backup.job.finished", {"outcome": "success", "repository": "MyRepository", "job": "nightly", "duration_s": 12.5,
                                 "finished_at": "2026-11-21T02:38:12.500Z",
                                 "snapshot_id": "21de6344a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c",
                                 "stats": {"files_new": 4, "data_added": 62094, "total_bytes_processed": 60006}}),
    ]),
    ("backrest", "backrest-snapshot-error.json", "", [
        ("backup.task.finished", {"task": {"kind": "backup", "status": "failed"}}),
        ("backup.job.finished", {"outcome": "failed", "reason": "backup_error", "failed_tasks": ["backup"],
                                 "error": 'command "/usr/bin/restic backup" failed: exit status 1\n'
                                          "Fatal: unable to open config file: stat /srv/restic-repo/config: no such file or directory"}),
    ]),
    ("backrest", "backrest-snapshot-warning.json", "", [
        ("backup.task.finished", {"task": {"status": "completed", "warning": True}, "condition": "CONDITION_SNAPSHOT_WARNING"}),
        ("backup.job.finished", {"outcome": "warning"}),
    ]),
    ("backrest", "backrest-snapshot-end-partial.json", "", [
        ("backup.task.finished", {"task": {"status": "completed", "warning": True}, "condition": "CONDITION_SNAPSHOT_END"}),
        ("backup.job.finished", {"outcome": "warning"}),
    ]),
    ("backrest", "backrest-snapshot-skipped.json", "", [
        ("backup.task.finished", {"task": {"status": "skipped"}}),
        ("backup.job.finished", {"outcome": "success", "skipped": True, "snapshot_id": None}),
    ]),
    ("backrest", "backrest-prune-success-eventname.json", "", [
        ("backup.task.finished", {"condition": "CONDITION_PRUNE_SUCCESS", "task": {"kind": "prune", "status": "completed"}}),
    ]),
    ("backrest", "backrest-any-error-number.json", "", [
        ("backup.task.finished", {"condition": "CONDITION_ANY_ERROR", "task": {"kind": "check", "status": "failed",
                                  "message": "check: exit status 1: Fatal: wrong password or no key found"}}),
    ]),
    ("backrest", "backrest-snapshot-start.json", "", [
        ("backup.job.started", {"repository": "MyRepository", "job": "nightly", "condition": "CONDITION_SNAPSHOT_START"}),
        ("backup.task.started", {"task": {"kind": "backup", "status": "running"}}),
    ]),
    ("borgmatic", "borgmatic-hook-start.json", "", [
        ("backup.job.started", {"job": "nightly", "repository": "/srv/borg/repo"}),
    ]),
    ("borgmatic", "borgmatic-hook-fail.json", "", [
        ("backup.job.finished", {"outcome": "failed", "error": "Command 'borg create' returned non-zero exit status 2.",
                                 "output_tail": "Repository /srv/borg/repo does not exist."}),
    ]),
    ("netcfgbu", "netcfgbu-backup-success.json", "", [
        ("backup.device.succeeded", {"job_id": "netcfgbu-run-1", "host": "switch1", "error": None,
                                     "device": {"host": "switch1", "ipaddr": "10.0.0.1", "os_name": "eos", "username": "admin"}}),
    ]),
    ("netcfgbu", "netcfgbu-backup-success-not-true.json", "", [
        ("backup.device.failed", {"host": "switch2", "error": "OSError: config was empty"}),
    ]),
    ("netcfgbu", "netcfgbu-backup-failed.json", "", [
        ("backup.device.failed", {"host": "router1", "error": "TIMEOUT", "device": {"host": "router1", "os_name": "nxos"}}),
    ]),
    ("netcfgbu", "netcfgbu-report.json", "", [
        ("backup.report", {"job_id": "netcfgbu-run-1", "total": 2, "ok": 1, "fail": 1, "start": "2026-11-21T01:29:47.000Z",
                           "stop": "2026-11-21T01:29:55.000Z", "duration_s": 7.829,
                           "failures": [{"host": "router1", "os_name": "nxos", "error": "TIMEOUT"}]}),
    ]),
    ("netcfgbu", "netcfgbu-git-report.json", "", [
        ("backup.vcs.saved", {"job_id": "netcfgbu-vcs-1", "success": True, "tag_name": "20261121_033800"}),
    ]),
]


@pytest.mark.parametrize("adapter,name,query,expected", GOOD, ids=[g[1] for g in GOOD])
async def test_real_payload_gives_the_canonical_events(bus: Bus, adapter: str, name: str, query: str,
                                                       expected: list[tuple[str, dict[str, Any]]]) -> None:
    status, body = await bus.ingest(adapter, sample(name), query)
    assert status == 202, body
    events = bus.events()
    assert [e["type"] for e in events] == [t for t, _ in expected]
    assert [a["seq"] for a in body["accepted"]] == [e["seq"] for e in events]
    for event, (_, data) in zip(events, expected, strict=True):
        subset(event["data"], data, event["type"])
        assert event["specversion"] == "1.0" and event["id"] and event["source"]
    job_ids = {e["data"].get("job_id") for e in events}
    assert len(job_ids) == 1 and None not in job_ids, "one job, one job_id"
    raw = orjson.dumps(events).decode()
    assert "s3cr3t" not in raw and "en-s3cr3t" not in raw, "credentials of the record must not travel"
    # The same report posted again is the same events: nothing new is stored.
    again_status, again = await bus.ingest(adapter, sample(name), query)
    if adapter in ("restic", "borgitory"):
        assert again_status == 202 and all(a.get("duplicate") for a in again["accepted"]), again
        assert len(bus.events()) == len(events)


# -- bad payloads: (adapter, sample, query, status, field, words) ------------------------------

BAD = [
    ("restic", "bad-restic-truncated.jsonl", "", 400, "line 2", "not valid JSON"),
    ("restic", "bad-restic-counter-not-a-number.jsonl", "", 400, "line 1.files_new", "must be an integer"),
    ("restic", "bad-restic-no-message-type.jsonl", "", 400, "line 1.message_type", "missing"),
    ("restic", "bad-restic-duration-not-a-number.jsonl", "", 400, "line 1.total_duration", "must be a number"),
    ("restic", "restic-0.14-first-backup.jsonl", "?exit_status=one", 400, "exit_status", "integer"),
    ("borgitory", "bad-borgitory-no-id.json", "", 400, "id", "missing"),
    ("borgitory", "bad-borgitory-unknown-status.json", "", 400, "status", "must be one of"),
    ("borgitory", "bad-borgitory-task-status.json", "", 400, "tasks[1].status", "exploded"),
    ("borgitory", "bad-borgitory-started-at.json", "", 400, "started_at", "ISO 8601"),
    ("borgitory", "bad-borgitory-return-code.json", "", 400, "return_code", "must be an integer"),
    ("borgitory", "bad-borgitory-array.json", "", 400, "body", "must be a JSON object"),
    ("backrest", "bad-backrest-unknown-condition.json", "", 400, "event", "unknown Backrest condition"),
    ("backrest", "bad-backrest-no-repo.json", "", 400, "repo", "missing"),
    ("backrest", "bad-backrest-stats-not-object.json", "", 400, "stats", "must be an object"),
    ("backrest", "bad-backrest-stats-files-new.json", "", 400, "stats.files_new", "must be an integer"),
    ("backrest", "bad-backrest-duration.json", "", 400, "duration_s", "must be a number"),
    ("backrest", "bad-backrest-time.json", "", 400, "time", "ISO 8601"),
    ("backrest", "bad-backrest-not-json.json", "", 400, "body", "not valid JSON"),
    ("borgmatic", "bad-borgmatic-unknown-state.json", "", 400, "state", "must be one of"),
    ("borgmatic", "bad-borgmatic-no-state.json", "", 400, "state", "missing"),
    ("borgmatic", "bad-borgmatic-error-not-string.json", "", 400, "error", "must be a string"),
    ("netcfgbu", "bad-netcfgbu-unknown-hook.json", "", 400, "hook", "must be one of"),
    ("netcfgbu", "bad-netcfgbu-no-job-id.json", "", 400, "job_id", "missing"),
    ("netcfgbu", "bad-netcfgbu-record-without-host.json", "", 400, "record.host", "host"),
    ("netcfgbu", "bad-netcfgbu-success-not-bool.json", "", 400, "success", "true or false"),
    ("netcfgbu", "bad-netcfgbu-failure-without-record.json", "", 400, "failed[0].record", "missing"),
]


@pytest.mark.parametrize("adapter,name,query,status,field,words", BAD, ids=[b[1] + b[2] for b in BAD])
async def test_malformed_payload_gets_400_naming_the_field(bus: Bus, adapter: str, name: str, query: str, status: int,
                                                           field: str, words: str) -> None:
    got, body = await bus.ingest(adapter, sample(name), query)
    assert got == status, body
    assert body["field"] == field, body
    assert words in body["error"], body
    assert bus.events() == [], "nothing of a refused payload is stored"


@pytest.mark.parametrize("adapter", ["borgitory", "backrest", "borgmatic", "restic", "netcfgbu"])
async def test_empty_body_is_400_for_every_adapter(bus: Bus, adapter: str) -> None:
    status, body = await bus.ingest(adapter, b"")
    assert status == 400 and body["field"] == "body", body


async def test_unknown_adapter_is_404_naming_the_known_ones(bus: Bus) -> None:
    status, body = await bus.ingest("duplicati", b"{}")
    assert status == 404 and body["field"] == "adapter"
    assert "borgitory" in body["error"] and "restic" in body["error"]


# -- Backrest: a start and its end are one job ------------------------------------------------

async def test_backrest_start_then_success_share_the_job_and_end_plus_success_is_one_event(bus: Bus) -> None:
    await bus.ingest("backrest", sample("backrest-snapshot-start.json"))
    await bus.ingest("backrest", sample("backrest-snapshot-success.json"))
    await bus.ingest("backrest", sample("backrest-snapshot-end-success.json"))  # a second hook on END
    events = bus.events()
    assert [e["type"] for e in events] == ["backup.job.started", "backup.task.started", "backup.task.finished",
                                           "backup.job.finished"]
    assert len({e["data"]["job_id"] for e in events}) == 1
    assert events[3]["data"]["started_at"] == events[0]["data"]["started_at"]


# -- the ping API ----------------------------------------------------------------------------

async def test_ping_start_log_finish_is_one_job_with_borgmatics_log(bus: Bus) -> None:
    # What borgmatic 2.1's healthchecks hook sends, in order, bodies as it sent them.
    for path, body in [(UUID_KEY + "/start", b""), (UUID_KEY + "/log", sample("borgmatic-2.1-log.txt")),
                       (UUID_KEY, sample("borgmatic-2.1-finish.txt"))]:
        status, text, headers = await bus.ping(path, body)
        assert (status, text) == (200, "OK")
        assert headers["Ping-Body-Limit"] == "100000"
    started, log, finished = bus.events()
    assert started["type"] == "backup.job.started" and started["subject"] == "MyRepository"
    subset(started["data"], {"job": "nightly", "repository": "MyRepository", "rid": None})
    assert log["type"] == "backup.log" and log["data"]["job_id"] == started["data"]["job_id"]
    assert "Creating archive" in log["data"]["message"]
    subset(finished["data"], {"job_id": started["data"]["job_id"], "outcome": "success", "exit_status": 0, "error": None,
                              "started_at": started["data"]["started_at"]})
    assert "Archive name:" in finished["data"]["output_tail"] and finished["data"]["duration_s"] >= 0
    assert UUID_KEY not in orjson.dumps([started, log, finished]).decode(), "the key is a credential"


async def test_ping_failure_names_borgmatics_error(bus: Bus) -> None:
    await bus.ping(UUID_KEY + "/start")
    await bus.ping(UUID_KEY + "/fail", sample("borgmatic-2.1-missing-repository-fail.txt"))
    started, finished = bus.events()
    subset(finished["data"], {"job_id": started["data"]["job_id"], "outcome": "failed", "reason": "backup_error",
                              "exit_status": None, "error": "Repository /tmp/bmt/missing does not exist."})


PING_SEQUENCES = [
    # (requests, expected (type, data subset) per event, how many distinct job ids)
    ([("GET", UUID_KEY, None)], [("backup.job.finished", {"outcome": "success", "exit_status": 0, "started_at": None})], 1),
    ([("HEAD", UUID_KEY + "/start", None), ("HEAD", UUID_KEY + "/0", None)],
     [("backup.job.started", {}), ("backup.job.finished", {"outcome": "success", "exit_status": 0})], 1),
    ([("POST", "db-dump/start", b""), ("POST", "db-dump/2", b"pg_dump: error: connection refused\n")],
     [("backup.job.started", {"job": "db-dump", "repository": "pg"}),
      ("backup.job.finished", {"outcome": "failed", "exit_status": 2, "error": "pg_dump: error: connection refused"})], 1),
    ([("GET", UUID_KEY + "/start?rid=11111111-1111-4111-8111-111111111111", None),
      ("GET", UUID_KEY + "/start?rid=22222222-2222-4222-8222-222222222222", None),
      ("GET", UUID_KEY + "/fail?rid=11111111-1111-4111-8111-111111111111", None),
      ("GET", UUID_KEY + "?rid=22222222-2222-4222-8222-222222222222", None)],
     [("backup.job.started", {"rid": "11111111-1111-4111-8111-111111111111"}),
      ("backup.job.started", {"rid": "22222222-2222-4222-8222-222222222222"}),
      ("backup.job.finished", {"outcome": "failed", "rid": "11111111-1111-4111-8111-111111111111",
                               "error": "the run reported a failure (/fail)"}),
      ("backup.job.finished", {"outcome": "success", "rid": "22222222-2222-4222-8222-222222222222"})], 2),
    ([("GET", UUID_KEY.upper() + "/start", None), ("GET", UUID_KEY + "/log", None), ("POST", UUID_KEY + "/1", b"")],
     [("backup.job.started", {}), ("backup.log", {"message": ""}),
      ("backup.job.finished", {"outcome": "failed", "error": "exited with status 1"})], 1),
    ([("POST", UUID_KEY + "/log", b"no run is open")], [("backup.log", {"job_id": None, "message": "no run is open"})], 0),
]


@pytest.mark.parametrize("requests,expected,jobs", PING_SEQUENCES, ids=[str(i) for i in range(len(PING_SEQUENCES))])
async def test_ping_sequences(bus: Bus, requests: list[tuple[str, str, bytes | None]],
                              expected: list[tuple[str, dict[str, Any]]], jobs: int) -> None:
    for method, path, body in requests:
        status, _, headers = await bus.ping(path, body, method)
        assert status == 200 and "Ping-Body-Limit" in headers
    events = bus.events()
    assert [e["type"] for e in events] == [t for t, _ in expected]
    for event, (_, data) in zip(events, expected, strict=True):
        subset(event["data"], data, event["type"])
    assert len({e["data"]["job_id"] for e in events if e["data"]["job_id"]}) == jobs
    if jobs == 2:  # each finish closes its own start
        by_rid = {}
        for e in events:
            by_rid.setdefault(e["data"]["rid"], set()).add(e["data"]["job_id"])
        assert all(len(ids) == 1 for ids in by_rid.values()), by_rid


BAD_PINGS = [
    ("0e0e0e0e-0000-4000-8000-000000000000", 404, "key"),
    ("no-such-slug/start", 404, "key"),
    (UUID_KEY + "/256", 400, "exit_status"),
    (UUID_KEY + "/explode", 404, "action"),
    (UUID_KEY + "/start?rid=not-a-uuid", 400, "rid"),
]


@pytest.mark.parametrize("path,status,field", BAD_PINGS, ids=[b[0][-20:] for b in BAD_PINGS])
async def test_bad_ping_gets_json_error_naming_the_part(bus: Bus, path: str, status: int, field: str) -> None:
    resp = await bus.client.get(f"/ping/{path}")
    assert resp.status == status
    body = await resp.json()
    assert body["field"] == field and body["error"]
    assert bus.events() == []


async def test_ping_body_is_cut_to_its_tail_at_the_announced_limit(bus: Bus) -> None:
    body = ("x" * 99 + "\n") * 2000 + "the end\n"  # 200 kB: twice what borgmatic would send
    await bus.ping(UUID_KEY + "/fail", body.encode())
    (finished,) = bus.events()
    tail = finished["data"]["output_tail"]
    assert tail.endswith("the end\n") and tail.startswith("…[cut: ")
    assert len(tail.encode()) <= 100_000 + 64


async def test_ping_needs_no_token_but_the_rest_still_does(tmp_path: Path, aiohttp_client: Any) -> None:
    config = make_config(tmp_path / "var", http={"tokens": ["tok-9f8e7d6c5b"]})
    journal = Journal(config.bus.data_dir / "journal.db", synchronous="NORMAL")
    ctx = zmq.asyncio.Context()
    broker = Broker(config, journal, ctx)
    await broker.start()
    try:
        client = await aiohttp_client(create_app(config, broker))
        assert (await client.get(f"/ping/{UUID_KEY}/start")).status == 200
        assert (await client.post("/ingest/restic", data=sample("restic-0.14-first-backup.jsonl"))).status == 401
    finally:
        await broker.stop()
        journal.close()
        ctx.term()


# -- [[checks]] validation ---------------------------------------------------------------------

BAD_CHECKS = [
    ([{"key": "Not A Slug!", "job": "j"}], "checks[0] (j).key: Value error, must be a UUID"),
    ([{"key": UUID_KEY}], "checks[0].job: Field required"),
    ([{"key": UUID_KEY, "job": "j", "repo": "x"}], "checks[0] (j).repo: unknown key"),
    ([{"key": UUID_KEY, "job": "a"}, {"key": UUID_KEY.upper(), "job": "b"}], "checks[1] (b).key: '5f0a1c2e-9a7b-4c3d-8e1f-123456789abc' is used twice"),
]


@pytest.mark.parametrize("checks,message", BAD_CHECKS, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD_CHECKS)])
def test_checks_config_errors_name_the_key(checks: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"checks": checks}, "test")
    assert message in str(info.value)


def test_a_slug_key_is_refused_on_a_non_loopback_listen() -> None:
    with pytest.raises(ConfigError, match=r"checks\[0\] \(nightly\).key: a slug can be guessed"):
        build_config({"http": {"listen": "0.0.0.0:8765", "tokens": ["tok-1234567"]},
                      "checks": [{"key": "nightly", "job": "nightly"}]}, "test")
    config = build_config({"http": {"listen": "0.0.0.0:8765", "tokens": ["tok-1234567"]},
                           "checks": [{"key": UUID_KEY.upper(), "job": "nightly"}]}, "test")
    assert config.checks[0].key == UUID_KEY and config.checks[0].repository is None
