"""The bus with real processes, real sockets, SIGKILL and restarts: nothing
accepted is ever lost."""

from __future__ import annotations

import asyncio
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import zmq.asyncio

from hookbus.bus.settings import BusSettings
from hookbus.bus.transport.client import ControlClient

from .conftest import Receiver, Site, cloudevent, count_lines, http_ready, read_jsonl, wait_for

JSONL = {"name": "audit", "kind": "jsonl", "events": ["*"]}


def jsonl_sub(site: Site, name: str = "audit") -> dict[str, Any]:
    return {**JSONL, "name": name, "path": str(site.root / f"{name}.jsonl")}


def assert_gap_free_once(lines: list[dict[str, Any]], head: int) -> None:
    seqs = [line["seq"] for line in lines]
    assert len(seqs) == len(set(seqs)), "a seq was written twice"
    assert sorted(seqs) == list(range(1, head + 1)), "seq has gaps"
    keys = [(line["source"], line["id"]) for line in lines]
    assert len(keys) == len(set(keys)), "an event was stored twice"


async def post_until_accepted(session: aiohttp.ClientSession, url: str, event: dict[str, Any]) -> int:
    """POST one event, retrying the same event (same id) until a 2xx, as a client would."""
    for _ in range(600):
        try:
            async with session.post(url + "/events", json=event, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status == 202:
                    return int((await resp.json())["accepted"][0]["seq"])
                assert resp.status >= 500, f"refused: {resp.status} {await resp.text()}"
        except (TimeoutError, aiohttp.ClientError):
            pass
        await asyncio.sleep(0.05)  # client back-off while the server restarts
    raise AssertionError(f"event {event['id']} never accepted")


async def test_serve_killed_twice_under_concurrent_posts_loses_nothing(site: Site, procs: Any) -> None:
    site.configure([jsonl_sub(site)])
    serve = procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")

    total = 10_000
    accepted: dict[str, int] = {}
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(cloudevent(i, job=f"job-{i % 37}"))

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            event = queue.get_nowait()
            accepted[event["id"]] = await post_until_accepted(session, site.url, event)

    async def killer() -> None:
        for threshold in (2_500, 6_000):
            await wait_for(lambda threshold=threshold: len(accepted) >= threshold, 120, f"{threshold} events accepted")
            serve.kill9()
            serve.start()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        await asyncio.gather(killer(), *(worker(session) for _ in range(64)))

    assert len(accepted) == total
    out = site.root / "audit.jsonl"
    await wait_for(lambda: count_lines(out) >= total, 120, "every accepted event in the jsonl file")
    lines = read_jsonl(out)
    assert_gap_free_once(lines, total)
    by_id = {line["id"]: line["seq"] for line in lines}
    assert by_id == accepted, "the jsonl seq of an event differs from the seq it was accepted with"
    assert serve.output().count("broker: control") == 3  # it really was restarted twice


async def publish_all(bus: BusSettings, bodies: list[bytes], batch: int = 500, in_flight: int = 4) -> list[dict[str, Any]]:
    client = ControlClient(bus, zmq.asyncio.Context.instance())
    chunks = [bodies[i:i + batch] for i in range(0, len(bodies), batch)]
    results: list[list[dict[str, Any]]] = [[] for _ in chunks]
    slots = asyncio.Semaphore(in_flight)

    async def one(index: int) -> None:
        async with slots:
            results[index] = await client.publish(chunks[index], timeout=120)

    try:
        await asyncio.gather(*(one(i) for i in range(len(chunks))))
    finally:
        client.close()
    return [item for chunk in results for item in chunk]


def bus_settings(site: Site) -> BusSettings:
    return BusSettings(data_dir=site.root / "var", control=site.control, publish=site.publish)  # its credential is there


async def test_burst_of_100k_events_loses_nothing(site: Site, procs: Any) -> None:
    site.configure([jsonl_sub(site)])
    procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    total = 100_000
    bodies = [orjson.dumps(cloudevent(i, job=f"job-{i % 101}")) for i in range(total)]
    accepted = await publish_all(bus_settings(site), bodies)
    assert [a["seq"] for a in accepted] == list(range(1, total + 1))
    out = site.root / "audit.jsonl"
    await wait_for(lambda: count_lines(out) >= total, 180, "100,000 events in the jsonl file", interval=0.5)
    assert_gap_free_once(read_jsonl(out), total)


async def test_subscriber_process_killed_resumes_from_its_cursor(site: Site, procs: Any, receiver: Receiver) -> None:
    site.configure([jsonl_sub(site), {"name": "hook", "kind": "webhook", "url": receiver.url}])
    procs("broker", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus broker to listen")
    subscriber = procs("subscriber", "audit", "hook", "--config", str(site.config))
    out = site.root / "audit.jsonl"
    total = 6_000
    bodies = [orjson.dumps(cloudevent(i, job=f"job-{i % 11}")) for i in range(total)]

    await publish_all(bus_settings(site), bodies[:2_000])
    await wait_for(lambda: count_lines(out) >= 1_000, 60, "the subscriber to be half-way")

    async def cursors_saved() -> bool:
        async with aiohttp.ClientSession() as session, session.get(site.url + "/api/subscribers") as resp:
            subs = (await resp.json())["subscribers"]
        return all(s["cursor"] > 0 for s in subs)

    await wait_for(cursors_saved, 30, "both subscribers to save a cursor")
    subscriber.kill9()
    await publish_all(bus_settings(site), bodies[2_000:])  # published while the subscriber is dead
    subscriber.start()

    await wait_for(lambda: count_lines(out) >= total, 90, "every event in the jsonl file")
    assert_gap_free_once(read_jsonl(out), total)
    await wait_for(lambda: len({r["body"]["seq"] for r in receiver.received}) >= total, 90, "every event at the webhook")
    # At-least-once: the restart repeats what was done after the last saved cursor,
    # and only that: it resumed from its cursor, not from the start.
    starts = [int(n) for n in re.findall(r"subscriber hook \(webhook\): starting after seq (\d+)", subscriber.output())]
    assert len(starts) == 2 and starts[1] > 0, starts
    seen: set[int] = set()
    repeated = [seq for seq in (r["body"]["seq"] for r in receiver.received) if seq in seen or seen.add(seq)]
    assert all(seq > starts[1] for seq in repeated), "an event at or below the saved cursor was delivered again"


async def test_webhook_target_down_30s_then_up_gets_everything_in_order_per_job(site: Site, procs: Any, receiver: Receiver) -> None:
    retry = {"attempts": 100, "max_delay": 2.0, "initial_delay": 0.2}
    site.configure([jsonl_sub(site), {"name": "hook", "kind": "webhook", "url": receiver.url, "retry": retry, "timeout": 5}])
    receiver.status = 503
    procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    jobs = [f"job-{j}" for j in range(4)]
    async with aiohttp.ClientSession() as session:
        for i in range(80):
            await post_until_accepted(session, site.url, cloudevent(i, job=random.choice(jobs)))
    loop = asyncio.get_running_loop()
    down_until = loop.time() + 30
    await wait_for(lambda: loop.time() >= down_until, 40, "30 s of 503", interval=0.5)
    assert receiver.attempts > 0 and not receiver.received
    receiver.status = 200
    await wait_for(lambda: len({r["body"]["id"] for r in receiver.received}) >= 80, 30, "all 80 events delivered")
    per_job: dict[str, list[int]] = defaultdict(list)
    for record in receiver.received:
        per_job[record["body"]["data"]["job_id"]].append(record["body"]["seq"])
    for job, seqs in per_job.items():
        assert seqs == sorted(seqs), f"{job} delivered out of order: {seqs}"
    assert not any("secret-token-123" in line for line in (site.root / "proc0.log").read_text().splitlines())


async def test_permanent_error_dead_letters_then_replay_delivers(site: Site, procs: Any, receiver: Receiver) -> None:
    site.configure([jsonl_sub(site), {"name": "hook", "kind": "webhook", "url": receiver.url, "events": ["backup.*"]}])
    receiver.status, receiver.body = 410, "channel_is_archived"
    procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    async with aiohttp.ClientSession() as session:
        seq = await post_until_accepted(session, site.url, cloudevent(1, job="nightly", type_="backup.job.finished", outcome="failed"))
    out = site.root / "audit.jsonl"

    def failure_event() -> dict[str, Any] | None:
        return next((e for e in read_jsonl(out) if e["type"] == "hookbus.delivery.failed"), None)

    failed = await wait_for(failure_event, 20, "a hookbus.delivery.failed event")
    assert failed["data"]["subscriber"] == "hook"
    assert failed["data"]["event_id"] == "ev-1" and failed["data"]["event_seq"] == seq
    assert failed["data"]["attempts"] == 1  # 410 is permanent: not retried
    assert "410" in failed["data"]["error"] and "secret-token-123" not in failed["data"]["error"]

    status = await run_cli("status", "--json", "--config", str(site.config))
    assert status.returncode == 0, status.stderr
    info = orjson.loads(status.stdout)
    hook = next(s for s in info["subscribers"] if s["name"] == "hook")
    assert hook["dead_letters"] == 1
    assert "secret-token-123" not in status.stdout

    receiver.status = 200
    replay = await run_cli("replay", "--dead-letters", "--config", str(site.config))
    assert replay.returncode == 0, replay.stderr
    assert "queued 1" in replay.stdout
    await wait_for(lambda: receiver.received, 20, "the replayed event at the webhook")
    assert receiver.received[0]["body"]["id"] == "ev-1"
    after = orjson.loads((await run_cli("status", "--json", "--config", str(site.config))).stdout)
    assert next(s for s in after["subscribers"] if s["name"] == "hook")["dead_letters"] == 0
    assert hook["stats"]["delivered"] == 0

    async def delivered() -> int:
        info = orjson.loads((await run_cli("status", "--json", "--config", str(site.config))).stdout)
        return int(next(s for s in info["subscribers"] if s["name"] == "hook")["stats"]["delivered"])

    # a replayed delivery is a delivery: `hookbus status` counts it (its next heartbeat says so)
    await wait_for(lambda: delivered(), 10, "status to count the replayed delivery", interval=0.3)
    assert await delivered() == 1


class CliResult:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


async def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> CliResult:
    import os
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hookbus.cli", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})}, cwd=cwd)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return CliResult(proc.returncode or 0, out.decode(), err.decode())


async def test_emit_exits_0_once_accepted_and_3_when_no_broker(site: Site, procs: Any) -> None:
    site.configure([jsonl_sub(site)])
    down = await run_cli("emit", "backup.log", "--data", '{"message": "x"}', "--timeout", "2", "--config", str(site.config))
    assert down.returncode == 3
    assert "not accepted" in down.stderr and site.control in down.stderr and "Traceback" not in down.stderr
    procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    up = await run_cli("emit", "backup.job.finished", "--data", '{"job_id": "j-1", "outcome": "success"}',
                       "--source", "borgmatic://db1/main", "--subject", "MyRepository", "--id", "e-1", "--config", str(site.config))
    assert up.returncode == 0, up.stderr
    assert orjson.loads(up.stdout) == {"id": "e-1", "seq": 1, "duplicate": False}
    again = await run_cli("emit", "backup.job.finished", "--source", "borgmatic://db1/main", "--id", "e-1", "--config", str(site.config))
    assert orjson.loads(again.stdout) == {"id": "e-1", "seq": 1, "duplicate": True}
    out = site.root / "audit.jsonl"
    await wait_for(lambda: count_lines(out) >= 1, 10, "the event in the jsonl file")
    assert read_jsonl(out)[0]["subject"] == "MyRepository"
    bad = await run_cli("emit", "backup.log", "--data", "{not json", "--config", str(site.config))
    assert bad.returncode == 2 and "--data" in bad.stderr and "Traceback" not in bad.stderr


async def test_config_errors_name_the_key(tmp_path: Path) -> None:
    cases = {
        '[[subscribers]]\nname = "a"\nkind = "jsonl"\npath = "x"\npathx = 1\n': "subscribers[0] (a).pathx: unknown key",
        '[[subscribers]]\nname = "a"\nkind = "nosuch"\n': "subscribers[0] (a).kind: unknown subscriber kind 'nosuch'",
        '[http]\nlisten = "0.0.0.0:8765"\n': "http.listen",
        '[http]\ntokens = ["env:HOOKBUS_TEST_UNSET_VAR"]\n': "http.tokens[0]: environment variable HOOKBUS_TEST_UNSET_VAR is not set",
        '[bus]\ncontrol = "http://x"\n': "bus.control",
        '[[subscribers]]\nname = "a"\nkind = "webhook"\n': "subscribers[0] (a).url: Field required",
        "[bus\n": "not valid TOML",
    }
    for text, expected in cases.items():
        path = tmp_path / "bad.toml"
        path.write_text(text)
        result = await run_cli("check-config", "--config", str(path))
        assert result.returncode == 2, (text, result.stdout, result.stderr)
        assert expected in result.stderr, (text, result.stderr)
        assert "Traceback" not in result.stderr


async def test_check_config_on_embedded_defaults_and_the_example(tmp_path: Path) -> None:
    result = await run_cli("check-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "audit (jsonl)" in result.stdout and "<embedded defaults>" in result.stdout
    example = Path(__file__).parent.parent / "config" / "hookbus.example.toml"
    env = {"HOOKBUS_TOKEN": "t0ken-for-test", "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/slackSECRET1",
           "HC_PING_NIGHTLY": "https://hc-ping.com/5f0a1c2e-9a7b-4c3d-8e1f-123456789abc",
           "ALERT_APPRISE_URL": "json://127.0.0.1:9/alerts/apprisesecret1"}
    result = await run_cli("check-config", "--config", str(example), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for secret in ("t0ken-for-test", "slackSECRET1", "5f0a1c2e-9a7b", "apprisesecret1"):
        assert secret not in result.stdout + result.stderr


async def test_retry_state_survives_a_restart(site: Site, procs: Any, receiver: Receiver) -> None:
    retry = {"attempts": 4, "max_delay": 0.5, "initial_delay": 0.2}
    site.configure([{"name": "hook", "kind": "webhook", "url": receiver.url, "retry": retry}])
    receiver.status = 503
    serve = procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    async with aiohttp.ClientSession() as session:
        await post_until_accepted(session, site.url, cloudevent(1))
    await wait_for(lambda: receiver.attempts >= 2, 20, "two failed attempts")
    serve.kill9()
    tried_before = receiver.attempts
    serve.start()
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen again")

    async def dead_letters() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as session, session.get(site.url + "/api/dead-letters") as resp:
            return list((await resp.json())["dead_letters"])

    letters = await wait_for(dead_letters, 20, "the event to be dead-lettered")
    # The attempt count went on from where it was, not from zero: 4 in all.
    assert receiver.attempts == 4, (tried_before, receiver.attempts)
    assert letters[0]["attempts"] == 4 and "503" in letters[0]["error"]


async def test_replay_a_subscriber_from_a_sequence_number(site: Site, procs: Any, receiver: Receiver) -> None:
    site.configure([{"name": "hook", "kind": "webhook", "url": receiver.url}])
    procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    async with aiohttp.ClientSession() as session:
        for i in range(1, 6):
            await post_until_accepted(session, site.url, cloudevent(i, job="one-job"))
    await wait_for(lambda: len(receiver.received) >= 5, 20, "five events delivered")
    result = await run_cli("replay", "--subscriber", "hook", "--from", "3", "--config", str(site.config))
    assert result.returncode == 0, result.stderr
    await wait_for(lambda: len(receiver.received) >= 8, 20, "seq 3, 4, 5 delivered again")
    assert [r["body"]["seq"] for r in receiver.received] == [1, 2, 3, 4, 5, 3, 4, 5]
    unknown = await run_cli("replay", "--subscriber", "nope", "--from", "1", "--config", str(site.config))
    assert unknown.returncode == 2 and "no subscriber named 'nope'" in unknown.stderr
