"""hookbus serve on a real PostgreSQL (DESIGN §12): real processes, real sockets,
SIGKILL, and the database itself stopped under load. Nothing answered 2xx is lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from .conftest import HOOKBUS, Site, cloudevent, count_lines, http_ready, read_jsonl, wait_for
from .pg import PgServer, server_or_skip
from .test_process import assert_gap_free_once, bus_settings, jsonl_sub, post_until_accepted, publish_all


def configure_on(site: Site, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """The store's URL, password and all, from the environment (env:), as an operator would keep it."""
    monkeypatch.setenv("HOOKBUS_TEST_STORE", url)
    site.configure([jsonl_sub(site)], store="env:HOOKBUS_TEST_STORE")


async def test_serve_on_postgres_killed_under_posts_and_publishes_loses_nothing(
        site: Site, procs: Any, pg_server: PgServer, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    configure_on(site, monkeypatch, pg_url)
    serve = procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")

    over_http, over_zmq = 3_000, 1_000
    accepted: dict[str, int] = {}
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for i in range(over_http):
        queue.put_nowait(cloudevent(i, job=f"job-{i % 13}"))

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            event = queue.get_nowait()
            accepted[event["id"]] = await post_until_accepted(session, site.url, event)

    async def killer() -> None:
        await wait_for(lambda: len(accepted) >= 1_000, 120, "1,000 events accepted")
        serve.kill9()
        serve.start()

    async def publisher() -> None:  # ZeroMQ publishers (DEALER→ROUTER, acked after the commit), across the kill too
        bodies = [orjson.dumps(cloudevent(i, job=f"zjob-{i % 7}") | {"source": "test://zmq"}) for i in range(over_zmq)]
        for answer in await publish_all(bus_settings(site), bodies, batch=50, in_flight=2):
            accepted[f"zmq:{answer['id']}"] = answer["seq"]

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
        await asyncio.gather(killer(), publisher(), *(worker(session) for _ in range(32)))
    emitted = await asyncio.create_subprocess_exec(*HOOKBUS, "emit", "backup.log", "--id", "by-emit", "--config",
                                                   str(site.config), stdout=asyncio.subprocess.PIPE)
    assert await emitted.wait() == 0

    total = over_http + over_zmq + 1
    out = site.root / "audit.jsonl"
    await wait_for(lambda: count_lines(out) >= total, 120, "every accepted event in the jsonl file")
    lines = read_jsonl(out)
    assert_gap_free_once(lines, total)
    by_id = {(f"zmq:{line['id']}" if line["source"] == "test://zmq" else line["id"]): line["seq"] for line in lines}
    assert {k: v for k, v in by_id.items() if k != "by-emit"} == accepted
    log = serve.output()
    assert log.count("broker: control") == 2  # it really was killed and started again
    where = pg_url.replace(f":{pg_server.password}@", "@")
    assert pg_server.password not in log and f"journal {where}" in log  # where, whole, and never the password


async def test_postgres_stopped_30s_mid_burst_answers_503_then_delivers_every_accepted_event(
        site: Site, procs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with server_or_skip() as server:  # its own server: this test stops it
        configure_on(site, monkeypatch, server.new_database())
        serve = procs("serve", "--config", str(site.config))
        await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
        answers: dict[int, int] = {}
        retry_after: set[str] = set()
        accepted: dict[str, int] = {}
        outage = {"down": 0.0, "up": 0.0}

        async def post(session: aiohttp.ClientSession, event: dict[str, Any]) -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    async with session.post(site.url + "/events", json=event, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                        answers[resp.status] = answers.get(resp.status, 0) + 1
                        if resp.status == 202:
                            accepted[event["id"]] = (await resp.json())["accepted"][0]["seq"]
                            return
                        assert resp.status == 503, f"{resp.status}: {await resp.text()}"
                        retry_after.add(resp.headers.get("Retry-After", ""))
                except (TimeoutError, aiohttp.ClientError):
                    pass
                await asyncio.sleep(0.25)
            raise AssertionError(f"{event['id']} never accepted")

        async def sender(session: aiohttp.ClientSession, w: int) -> None:
            i = 0
            while not outage["up"] or time.monotonic() < outage["up"] + 3:  # a burst that goes on across the outage
                await post(session, cloudevent(w * 100_000 + i, job=f"job-{w}"))
                i += 1

        async def database_down() -> None:
            await wait_for(lambda: len(accepted) >= 500, 60, "500 events accepted")
            server.stop("fast")
            outage["down"] = time.monotonic()
            await asyncio.sleep(30)  # the outage itself: what is measured here is the bus meanwhile
            server.start()
            outage["up"] = time.monotonic()

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:
            await asyncio.gather(database_down(), *(sender(session, w) for w in range(16)))

        assert answers.get(503, 0) > 0 and retry_after == {"5"}  # refused while down, saying when to come back
        out = site.root / "audit.jsonl"
        await wait_for(lambda: count_lines(out) >= len(accepted), 60, "every accepted event in the jsonl file")
        lines = read_jsonl(out)
        head = max(accepted.values())
        assert_gap_free_once(lines, head)  # nothing half-accepted: no seq without its event, none twice
        assert {line["id"]: line["seq"] for line in lines} == accepted
        log = serve.output()
        assert server.password not in log and "Traceback" not in log


def test_check_config_names_the_postgres_store_without_its_password(tmp_path: Path, pg_server: PgServer) -> None:
    import subprocess

    config = tmp_path / "hookbus.toml"
    config.write_text(f'[bus]\nstore = "{pg_server.url()}"\ndata_dir = "{tmp_path / "var"}"\n')
    done = subprocess.run([*HOOKBUS, "check-config", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"journal postgresql://hookbus@127.0.0.1:{pg_server.port}/postgres" in done.stdout
    assert pg_server.password not in done.stdout + done.stderr
    config.write_text('[bus]\nstore = "mysql://root:hunter2@db/x"\n')
    done = subprocess.run([*HOOKBUS, "check-config", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "bus.store: " in done.stderr and "hunter2" not in done.stderr


async def test_migrate_copies_a_sqlite_journal_into_a_fresh_database_and_refuses_a_non_empty_one(
        tmp_path: Path, pg_server: PgServer, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from hookbus.bus.events.event import Event
    from hookbus.bus.events.silences import Silence
    from hookbus.bus.store.base import FAILED, DeliveredRun, Delivery, OpenJob
    from hookbus.bus.store.journal import Journal
    from hookbus.bus.store.postgres import PostgresStore

    def item(i: int | str, source: str = "test://m") -> tuple[Event, bytes]:
        event = Event(id=str(i), source=source, type="backup.log", data={"n": i})
        return event, event.to_json()

    data_dir = tmp_path / "var"
    journal = Journal(data_dir / "journal.db")
    await journal.append([item(i) for i in range(1, 52)])
    await journal.prune(-1)  # seqs 1..51 gone from a store with no cursors: the head stays 51
    await journal.append([item("nul\x00id", source="test://\x00")] + [item(i) for i in range(100, 120)])  # 52, 53..72
    await journal.set_cursor("audit", 60, 0)
    epoch = await journal.reset_cursor("ops", 55)
    await journal.set_cursor("ops", 58, epoch)
    await journal.set_retry("ops", 65, 3, 1e10, "503 busy")
    await journal.add_dead_letter("ops", 59, 4, "410 gone", None)
    replaying, _ = await journal.add_dead_letter("ops", 61, 2, "400", None)
    await journal.mark_replay([replaying], None)
    await journal.open_job("ping:key:", OpenJob("job-7", "2026-11-21T03:00:00Z"))
    await journal.save_checks(66, {"nightly": b'{"state":"down"}'}, {"nightly": b"[1]"})
    silence = await journal.add_silence(Silence(0, "nightly", None, None, 1.0, 9e9, "maintenance", 1.0))
    await journal.record_deliveries([Delivery(59, "ops", 1, 5.0, FAILED, 503, "busy")], [DeliveredRun("audit", 52, 60, 6.0, 200)])
    expected = {"read": journal.read(0, 1000), "cursors": journal.cursors(), "retries": journal.retries(),
                "dead": journal.dead_letters(), "checks": journal.load_checks(), "silences": journal.silences(0),
                "trail": journal.deliveries(list(range(50, 70))), "identity": journal.identity, "head": journal.last_seq}
    journal.close()

    config = tmp_path / "hookbus.toml"
    config.write_text(f'[bus]\ndata_dir = "{data_dir}"\n')
    monkeypatch.setenv("HOOKBUS_TEST_STORE", pg_url)
    cli = [*HOOKBUS, "migrate", "--to", "env:HOOKBUS_TEST_STORE", "--config", str(config)]
    done = await asyncio.create_subprocess_exec(*cli, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = (b.decode() for b in await done.communicate())
    assert done.returncode == 0, err
    assert "21 events" in out and "2 cursors" in out and "2 dead letters" in out and pg_server.password not in out + err

    store = PostgresStore(pg_url)
    try:
        got = {"read": store.read(0, 1000), "cursors": store.cursors(), "retries": store.retries(),
               "dead": store.dead_letters(), "checks": store.load_checks(), "silences": store.silences(0),
               "trail": store.deliveries(list(range(50, 70))), "identity": store.identity, "head": store.last_seq}
        assert got == expected
        assert await store.find_open_job("ping:key:") == OpenJob("job-7", "2026-11-21T03:00:00Z")
        [after] = await store.append([item("after")])
        assert after.seq == 73  # numbering goes on from the journal's head
        [again] = await store.append([item(100)])
        assert again.duplicate and again.seq == 53  # and a repeat of a copied event is known
        new_dead, _ = await store.add_dead_letter("ops", 62, 1, "x", None)
        new_silence = await store.add_silence(Silence(0, "weekly", None, None, 1.0, 9e9, "", 1.0))
        assert new_dead > replaying and new_silence.id > silence.id  # ids go on past the copied ones
    finally:
        store.close()

    done = await asyncio.create_subprocess_exec(*cli, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = (b.decode() for b in await done.communicate())
    assert done.returncode == 1 and "is not empty (events 22" in err and "fresh database" in err
    assert pg_server.password not in out + err


async def test_serve_started_while_postgres_is_down_waits_for_it_then_serves(
        site: Site, procs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node (re)started during the database's outage does not exit: it says why it waits and
    comes up by itself once the database is back (DESIGN §12: every node resumes by itself)."""
    with server_or_skip() as server:
        url = server.new_database()
        configure_on(site, monkeypatch, url)
        server.stop("fast")
        serve = procs("serve", "--config", str(site.config))
        await wait_for(lambda: "trying again in" in serve.output(), 20, "serve to say it waits for the database")
        assert serve.popen is not None and serve.popen.poll() is None
        assert "cannot be opened" in serve.output() and server.password not in serve.output()
        server.start()
        await wait_for(lambda: http_ready(site.url), 30, "hookbus serve to listen once the database is back")
        async with aiohttp.ClientSession() as session, session.post(site.url + "/events", json=cloudevent(1)) as resp:
            assert resp.status == 202, await resp.text()
        await wait_for(lambda: count_lines(site.root / "audit.jsonl") >= 1, 20, "the event delivered")
