"""Several `hookbus serve` nodes on one real PostgreSQL are one bus (DESIGN §12):
real processes, real sockets, SIGKILL. Each subscriber and the checks run on one
node at a time under a claim, and move to another node within [bus] lease when
theirs dies; clients fail over between the nodes listed."""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from hookbus.adapters import netcfgbu_plugin

from .conftest import HOOKBUS, Proc, cloudevent, count_lines, free_port, http_ready, read_jsonl, toml_value, wait_for
from .pg import PgServer, pg_server, pg_url  # noqa: F401  (fixtures)
from .test_process import assert_gap_free_once

LEASE = 4.0  # [bus] lease of the tests' nodes: short, so that a takeover is quick to wait for


@dataclass
class Node:
    name: str
    root: Path
    http_port: int = field(default_factory=free_port)
    control: str = field(default_factory=lambda: f"tcp://127.0.0.1:{free_port()}")
    publish: str = field(default_factory=lambda: f"tcp://127.0.0.1:{free_port()}")
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def config(self) -> Path:
        return self.root / "hookbus.toml"


class Cluster:
    """Nodes n1…nN of one bus: same store, same subscribers and checks, each its own data_dir and ports.
    Each lists its own control endpoint first (it binds that one), then the others'."""

    def __init__(self, root: Path, store: str, count: int, subscribers: list[dict[str, Any]],
                 checks: list[dict[str, Any]] | None = None, heartbeat: float = 0.5) -> None:
        self.root, self.store, self.heartbeat = root, store, heartbeat
        self.nodes = [Node(f"n{i}", root / f"n{i}") for i in range(1, count + 1)]
        self.subscribers, self.checks = subscribers, checks or []
        for node in self.nodes:
            node.root.mkdir(parents=True)
            self._configure(node)

    def _configure(self, node: Node) -> None:
        controls = [node.control] + [n.control for n in self.nodes if n is not node]
        bus = {"store": self.store, "node": node.name, "data_dir": str(node.root / "var"), "control": controls,
               "publish": node.publish, "heartbeat": self.heartbeat, "lease": LEASE}
        lines = ["[bus]"] + [f"{k} = {toml_value(v)}" for k, v in bus.items()]
        lines += ["", "[http]", f'listen = "127.0.0.1:{node.http_port}"']
        for table, rows in (("subscribers", self.subscribers), ("checks", self.checks)):
            for row in rows:
                lines += ["", f"[[{table}]]"] + [f"{k} = {toml_value(v)}" for k, v in row.items()]
        node.config.write_text("\n".join(lines) + "\n")

    def start(self, node: Node) -> None:
        log = node.root / "serve.log"
        node.proc = Proc(["serve", "--config", str(node.config)], log, node.root).start()

    async def start_all(self) -> None:
        """The first node sets up the CURVE keys; the others get a copy (one bus, one broker key)."""
        first = self.nodes[0]
        self.start(first)
        await wait_for(lambda: http_ready(first.url), 30, "n1 to listen")
        for node in self.nodes[1:]:
            shutil.copytree(first.root / "var" / "keys", node.root / "var" / "keys")
            (node.root / "var").chmod(0o700)
            self.start(node)
        for node in self.nodes[1:]:
            await wait_for(lambda n=node: http_ready(n.url), 30, f"{node.name} to listen")

    def stop_all(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                node.proc.stop()

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)


def holder(url: str, claim: str) -> str | None:
    """The node holding a claim now (read in the database, as `hookbus status` does)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT node FROM claims WHERE name=%s AND expires_at > extract(epoch from clock_timestamp())",
                           (claim,)).fetchone()
    return str(row[0]) if row else None


def other_holder(url: str, claim: str, than: str) -> str | None:
    name = holder(url, claim)
    return name if name != than else None


def trail_nodes(url: str, subscriber: str) -> list[tuple[float, str]]:
    """Every delivery of the trail of `subscriber` as (time, node), in time order."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT at, node FROM deliveries WHERE subscriber=%s AND outcome='delivered' "
                            "UNION ALL SELECT at, node FROM delivered_runs WHERE subscriber=%s", (subscriber, subscriber))
        return sorted((float(at), str(node)) for at, node in rows)


def spans(trail: list[tuple[float, str]]) -> list[tuple[str, float, float]]:
    """The trail as runs of one node: (node, first time, last time)."""
    out: list[tuple[str, float, float]] = []
    for at, node in trail:
        if out and out[-1][0] == node:
            out[-1] = (node, out[-1][1], at)
        else:
            out.append((node, at, at))
    return out


async def post_anywhere(session: aiohttp.ClientSession, nodes: list[Node], first: int, event: dict[str, Any]) -> int:
    """POST one event to a node, and on no answer or a 5xx to the next one (as a load balancer
    would), the same event (same id) until one answers 2xx; its seq."""
    for attempt in range(2000):
        node = nodes[(first + attempt) % len(nodes)]
        try:
            async with session.post(node.url + "/events", json=event, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status == 202:
                    return int((await resp.json())["accepted"][0]["seq"])
                assert resp.status >= 500, f"refused: {resp.status} {await resp.text()}"
        except (TimeoutError, aiohttp.ClientError):
            pass
        await asyncio.sleep(0.02)
    raise AssertionError(f"event {event['id']} never accepted")


async def test_three_nodes_one_killed_then_another_under_concurrent_posts_lose_nothing(
        tmp_path: Path, pg_server: PgServer, pg_url: str) -> None:
    out = tmp_path / "audit.jsonl"  # one file all nodes write to: two writers at once would show in it
    cluster = Cluster(tmp_path, pg_url, 3, [{"name": "audit", "kind": "jsonl", "events": ["*"], "path": str(out)}])
    try:
        await cluster.start_all()
        total = 10_000
        accepted: dict[str, int] = {}
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(i)
        kills: list[tuple[str, float, str, float]] = []  # (killed node, when, the node that took over, when)

        async def worker(session: aiohttp.ClientSession) -> None:
            while not queue.empty():
                i = queue.get_nowait()
                event = cloudevent(i, job=f"job-{i % 17}")
                accepted[event["id"]] = await post_anywhere(session, cluster.nodes, i, event)

        async def kill_the_holder(after: int) -> None:
            """SIGKILL the node delivering `audit`, once it has delivered (the trail says so); wait for
            another to take it over; start it again."""
            await wait_for(lambda: len(accepted) >= after, 120, f"{after} events accepted")
            name = await asyncio.to_thread(holder, pg_url, "subscriber:audit")
            assert name is not None, "no node holds audit"
            await wait_for(lambda: asyncio.to_thread(lambda: any(n == name for _, n in trail_nodes(pg_url, "audit"))),
                           30, f"{name}'s deliveries on the trail", interval=0.1)
            victim = cluster.node(name)
            assert victim.proc is not None
            victim.proc.kill9()
            killed_at = time.time()
            taker = await wait_for(lambda: asyncio.to_thread(other_holder, pg_url, "subscriber:audit", name), 3 * LEASE,
                                   "another node to take audit over", interval=0.1)
            kills.append((name, killed_at, taker, time.time()))
            cluster.start(victim)

        async def killer() -> None:
            await kill_the_holder(2_500)
            await kill_the_holder(6_000)

        began = time.monotonic()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=48)) as session:
            await asyncio.gather(killer(), *(worker(session) for _ in range(48)))
        posting = time.monotonic() - began
        await wait_for(lambda: count_lines(out) >= total, 120, "every accepted event in the jsonl file", interval=0.2)
        print(f"{total} events accepted in {posting:.1f} s ({total / posting:.0f}/s, two takeovers included), "
              f"all delivered {time.monotonic() - began:.1f} s after the first POST")

        lines = read_jsonl(out)
        assert_gap_free_once(lines, total)  # every seq once, no gap, nothing stored twice
        assert {line["id"]: line["seq"] for line in lines} == accepted  # every 2xx-answered event, with its seq

        # The trail: audit delivered by one node at a time, handed over once per kill, within the lease.
        await wait_for(lambda: asyncio.to_thread(lambda: trail_nodes(pg_url, "audit")[-1][0] > kills[-1][3]), 30,
                       "the trail of the last deliveries")
        runs = spans(await asyncio.to_thread(trail_nodes, pg_url, "audit"))
        assert [r[0] for r in runs] == [kills[0][0], kills[0][2], kills[1][2]], runs
        for (killed, killed_at, taker, _), before, after in zip(kills, runs[:-1], runs[1:], strict=True):
            assert before[0] == killed and after[0] == taker
            assert before[2] <= killed_at + 0.1  # the dead node delivered nothing after its death …
            assert after[1] - killed_at <= LEASE, f"{taker} took over {after[1] - killed_at:.2f} s after {killed} died"
        print("takeovers (s after the kill, first delivery by the new node):",
              [round(after[1] - k[1], 2) for k, after in zip(kills, runs[1:], strict=True)])
    finally:
        cluster.stop_all()


async def test_a_check_falling_due_while_its_evaluating_node_is_killed_goes_down_exactly_once(
        tmp_path: Path, pg_server: PgServer, pg_url: str) -> None:
    out = tmp_path / "checks.jsonl"
    cluster = Cluster(tmp_path, pg_url, 3, [{"name": "audit", "kind": "jsonl", "events": ["backup.*"], "path": str(out)}],
                      checks=[{"name": "nightly", "job": "nightly", "period": "6s", "grace": "1s"}])
    try:
        await cluster.start_all()
        evaluator = await wait_for(lambda: asyncio.to_thread(holder, pg_url, "checks"), 20, "a node to evaluate the checks")
        finished = {"specversion": "1.0", "id": "run-1-finished", "source": "test://nodes", "type": "backup.job.finished",
                    "data": {"job_id": "run-1", "job": "nightly", "outcome": "success"}}
        async with aiohttp.ClientSession() as session:
            ran_at = time.time()
            await post_anywhere(session, cluster.nodes, 2, finished)  # to a node; the evaluator learns by NOTIFY
        await wait_for(lambda: any(line["type"] == "backup.job.finished" for line in read_jsonl(out)), 20, "the run")
        # The check falls due 7 s after the run: kill the evaluator just before, so the next node finds it due.
        await asyncio.sleep(max(0.0, ran_at + 6.5 - time.time()))
        victim = cluster.node(evaluator)
        assert victim.proc is not None
        victim.proc.kill9()
        killed_at = time.time()
        await wait_for(lambda: any(line["type"] == "backup.check.down" for line in read_jsonl(out)), 3 * LEASE + 10,
                       "backup.check.down")
        down_after = time.time() - killed_at
        taker = await asyncio.to_thread(other_holder, pg_url, "checks", evaluator)
        assert taker is not None
        cluster.start(victim)  # back, it must not announce the change again
        await wait_for(lambda: http_ready(victim.url), 30, "the killed node to listen again")
        await asyncio.sleep(LEASE)  # time for a second announcement, if there were to be one
        with psycopg.connect(pg_url) as conn:
            downs = conn.execute("SELECT count(*) FROM events WHERE type=%s", (b"backup.check.down",)).fetchone()
        assert downs == (1,)
        assert [line["type"] for line in read_jsonl(out)].count("backup.check.down") == 1
        down = next(line for line in read_jsonl(out) if line["type"] == "backup.check.down")
        assert down["data"]["check"] == "nightly" and down["data"]["reason"] == "missed"
        print(f"checks moved from {evaluator} to {taker}; down delivered {down_after:.1f} s after the kill")
    finally:
        cluster.stop_all()


async def _down(status: Any, line_of: Any) -> str | None:
    text: str = await status()
    return text if "DOWN" in line_of(text, "node n1") else None


async def test_emit_and_the_netcfgbu_plugin_with_the_first_node_dead_reach_the_next(
        tmp_path: Path, pg_server: PgServer, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "audit.jsonl"
    cluster = Cluster(tmp_path, pg_url, 2, [{"name": "audit", "kind": "jsonl", "events": ["*"], "path": str(out)}])
    try:
        await cluster.start_all()
        first = cluster.nodes[0]
        assert first.proc is not None
        first.proc.kill9()
        # n1's config lists n1 first: emit passes over the dead node to n2.
        emitted = await asyncio.create_subprocess_exec(*HOOKBUS, "emit", "backup.log", "--id", "while-n1-is-dead",
                                                       "--data", '{"message": "hi"}', "--config", str(first.config),
                                                       stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await emitted.communicate()
        assert emitted.returncode == 0, stderr
        assert b'"seq":1' in stdout
        await wait_for(lambda: [line["id"] for line in read_jsonl(out)] == ["while-n1-is-dead"], 3 * LEASE + 10,
                       "the event delivered by n2")

        # The netcfgbu plugin file, with HOOKBUS_URL listing the dead node first, posts to n2.
        monkeypatch.setenv("HOOKBUS_URL", f"{first.url}, {cluster.nodes[1].url}/")
        monkeypatch.setenv("HOOKBUS_SPOOL", str(tmp_path / "spool.jsonl"))
        forwarder = netcfgbu_plugin.Forwarder()
        forwarder.emit("backup.report", {"total": 1, "ok": 1, "fail": 0})
        forwarder.close()
        await wait_for(lambda: [line["type"] for line in read_jsonl(out)] == ["backup.log", "backup.report"], 20,
                       "the plugin's report delivered")

        async def status() -> str:
            """`hookbus status` through n1's config (n1 dead: answered by n2)."""
            done = await asyncio.create_subprocess_exec(*HOOKBUS, "status", "--config", str(first.config),
                                                        stdout=asyncio.subprocess.PIPE)
            text = (await done.communicate())[0].decode()
            assert done.returncode == 0
            return text

        def line_of(text: str, start: str) -> str:
            return next((line for line in text.splitlines() if line.startswith(start)), "")

        # n1's last heartbeat grows older than the lease: it is said to be down.
        text = await wait_for(lambda: _down(status, line_of), 3 * LEASE, "n1 shown DOWN", interval=0.5)
        assert "alive" in line_of(text, "node n2") and "(answering)" in line_of(text, "node n2")
        assert "checks" in line_of(text, "node n2") and "retention" in line_of(text, "node n2")
        assert " n2 " in line_of(text, "audit "), text
    finally:
        cluster.stop_all()


async def test_an_event_committed_on_one_node_wakes_the_node_delivering_it_at_once(
        tmp_path: Path, pg_server: PgServer, pg_url: str) -> None:
    out = tmp_path / "audit.jsonl"
    # Heartbeats 5 s apart: an event that arrives sooner came by the database's notice (LISTEN/NOTIFY).
    cluster = Cluster(tmp_path, pg_url, 2, [{"name": "audit", "kind": "jsonl", "events": ["*"], "path": str(out)}],
                      heartbeat=5.0)
    try:
        await cluster.start_all()
        deliverer = await wait_for(lambda: asyncio.to_thread(holder, pg_url, "subscriber:audit"), 20, "audit to run")
        other = next(n for n in cluster.nodes if n.name != deliverer)
        await asyncio.sleep(1.0)  # past the start, when a node reads the journal anyway
        took: list[float] = []
        async with aiohttp.ClientSession() as session:
            for i in range(20):
                posted = time.monotonic()
                async with session.post(other.url + "/events", json=cloudevent(i)) as resp:
                    assert resp.status == 202
                await wait_for(lambda n=i + 1: count_lines(out) >= n, 10, f"event {i} delivered", interval=0.005)
                took.append(time.monotonic() - posted)
        took.sort()
        print(f"posted to {other.name}, delivered by {deliverer}: median {took[10] * 1000:.0f} ms, "
              f"slowest {took[-1] * 1000:.0f} ms")
        assert took[-1] < 1.0, took  # never a heartbeat's wait
    finally:
        cluster.stop_all()


async def test_a_check_paused_through_another_node_is_paused_where_it_is_evaluated(
        tmp_path: Path, pg_server: PgServer, pg_url: str) -> None:
    cluster = Cluster(tmp_path, pg_url, 2, [], checks=[{"name": "nightly", "job": "nightly", "period": "8s", "grace": "1s"}])
    try:
        await cluster.start_all()
        evaluator = cluster.node(await wait_for(lambda: asyncio.to_thread(holder, pg_url, "checks"), 20, "an evaluator"))
        other = next(n for n in cluster.nodes if n is not evaluator)
        run = {"specversion": "1.0", "id": "run-1-finished", "source": "test://nodes", "type": "backup.job.finished",
               "data": {"job_id": "run-1", "job": "nightly", "outcome": "success"}}

        async def status_on(node: Node) -> str:
            async with session.get(node.url + "/api/checks") as resp:
                return str((await resp.json())["checks"][0]["status"])

        async with aiohttp.ClientSession() as session:
            async with session.post(other.url + "/events", json=run) as resp:
                assert resp.status == 202
            ran_at = time.monotonic()
            for node in (evaluator, other):  # the other node reloads what the evaluator saved
                await wait_for(lambda n=node: _is(status_on(n), "up"), 10, f"the run seen on {node.name}", interval=0.2)
            async with session.post(other.url + "/api/checks/nightly/pause") as resp:
                assert resp.status == 200 and (await resp.json())["changed"] is True
            paused_at = time.monotonic()
            await wait_for(lambda: _is(status_on(evaluator), "paused"), 10, "the pause taken in by the evaluator",
                           interval=0.2)
            print(f"a pause made on {other.name} holds on {evaluator.name} after {time.monotonic() - paused_at:.1f} s")
            await asyncio.sleep(max(0.0, ran_at + 11.0 - time.monotonic()))  # past the run's due time (8 s + 1 s)
            assert await status_on(evaluator) == "paused"
        with psycopg.connect(pg_url) as conn:
            downs = conn.execute("SELECT count(*) FROM events WHERE type=%s", (b"backup.check.down",)).fetchone()
        assert downs == (0,)
    finally:
        cluster.stop_all()


async def _is(status: Any, wanted: str) -> bool:
    return await status == wanted
