"""The store's protocol (bus/store/base.py), run against both stores: the SQLite
journal and PostgreSQL (a real server started by tests/pg.py). Two store
objects on one database stand for two nodes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hookbus.bus.events.event import Event, EventError, compile_globs, new_event
from hookbus.bus.events.silences import Silence
from hookbus.bus.store.base import DELIVERED, FAILED, DeliveredRun, Delivery, JournalError, LeaseHeld, OpenJob
from hookbus.bus.store.journal import Journal
from hookbus.bus.store.postgres import PostgresStore
from tests.pg import PgServer

Store = Journal | PostgresStore

KINDS = ["sqlite", "postgres"]


@pytest.fixture(params=KINDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """Opens a store on one place (a file, a database) each time it is called: again = a restart, or another node."""
    if request.param == "sqlite":
        return lambda: Journal(tmp_path / "journal.db", synchronous="NORMAL")
    url = request.getfixturevalue("pg_url")
    return lambda: PostgresStore(url)


@pytest.fixture
async def journal(opener: Callable[[], Store]) -> AsyncIterator[Store]:
    store = opener()
    yield store
    store.close()


def sql(store: Store, text: str) -> str:
    """A test's own statement in the store's dialect (the placeholders differ)."""
    return text.replace("?", "%s") if isinstance(store, PostgresStore) else text


# -- the protocol, as the journal's tests had it --------------------------------------------------------------------------------------


def item(i: int | str, source: str = "test://units", type_: str = "backup.log") -> tuple[Event, bytes]:
    event = Event(id=str(i), source=source, type=type_, data={"n": i})
    return event, event.to_json()


async def test_concurrent_appends_get_gap_free_seqs(journal: Store) -> None:
    async def writer(w: int) -> list[int]:
        seqs = []
        for r in range(5):
            batch = [item(f"{w}-{r}-{k}") for k in range(1 + (w + r) % 3)]
            accepted = await journal.append(batch)
            got = [a.seq for a in accepted]
            assert got == list(range(got[0], got[0] + len(got)))  # one call's events stay together
            assert not any(a.duplicate for a in accepted)
            seqs += got
        return seqs

    results = await asyncio.gather(*(writer(w) for w in range(40)))
    seqs = sorted(s for r in results for s in r)
    assert seqs == list(range(1, len(seqs) + 1))
    assert journal.last_seq == len(seqs) == journal.event_count()
    stored, scanned = journal.read(0, 1000)
    assert [e.seq for e in stored] == seqs and scanned == len(seqs)


async def test_append_is_idempotent_on_source_and_id(journal: Store) -> None:
    [first] = await journal.append([item("a")])
    answers = await asyncio.gather(*(journal.append([item("a")]) for _ in range(20)))
    assert all(a == [type(first)("a", first.seq, True)] for a in answers)
    [other] = await journal.append([item("a", source="test://elsewhere")])
    assert other.seq == first.seq + 1 and not other.duplicate
    assert journal.event_count() == 2


async def test_refused_append_leaves_no_gap(journal: Store) -> None:
    await journal.append([item(1)])
    # The second event cannot be stored (not encodable): the whole call is refused,
    # and its first event's seq must be handed out again.
    bad = Event(id="bad", source="test://\udcff", type="backup.log")
    with pytest.raises(ValueError):
        await journal.append([item(2), (bad, b"{}")])
    [next_one] = await journal.append([item(3)])
    assert next_one.seq == 2
    assert [e.seq for e in journal.read(0, 10)[0]] == [1, 2]


async def test_appends_committed_together_with_repeats_among_them(journal: Store) -> None:
    """Appends written in one turn of the loop are inserted together; a repeat
    among them (of a stored event, or of one in the same commit) still gets its
    first seq, and no seq is skipped."""
    [stored] = await journal.append([item("old")])
    calls = [
        journal.append([item("a1"), item("a2")]),
        journal.append([item("old"), item("b1")]),  # a repeat of a stored event
        journal.append([item("c1"), item("c1")]),  # a repeat within one call
        journal.write(lambda conn: conn.execute("SELECT 1").fetchone()[0]),  # not an append, between appends
        journal.append([item(f"d{i}") for i in range(2500)]),  # more rows than one statement takes
    ]
    a, b, c, one, d = await asyncio.gather(*calls)
    assert one == 1
    assert [(x.seq, x.duplicate) for x in a] == [(2, False), (3, False)]
    assert [(x.seq, x.duplicate) for x in b] == [(stored.seq, True), (4, False)]
    assert [(x.seq, x.duplicate) for x in c] == [(5, False), (5, True)]
    assert [x.seq for x in d] == list(range(6, 2506)) and not any(x.duplicate for x in d)
    assert journal.last_seq == journal.event_count() == 2505
    events, _ = journal.read(0, 5000)
    assert [e.seq for e in events] == list(range(1, 2506))


async def test_appends_without_repeats_in_one_commit(journal: Store) -> None:
    futures = [journal.append([item(f"{w}-{k}") for k in range(3)]) for w in range(50)]
    answers = await asyncio.gather(*futures)
    assert [x.seq for answer in answers for x in answer] == list(range(1, 151))
    assert [e.body for e in journal.read(0, 200)[0]] == [item(f"{w}-{k}")[1] for w in range(50) for k in range(3)]


async def test_cursor_epochs(journal: Store) -> None:
    assert await journal.set_cursor("ops", 5, 0)
    assert journal.cursors()["ops"] == (5, 0)
    assert await journal.set_cursor("ops", 3, 0)  # accepted, but a cursor never moves back
    assert journal.cursors()["ops"] == (5, 0)

    await journal.set_retry("ops", 7, 2, time.time() + 60, "503")
    epoch = await journal.reset_cursor("ops", 1)
    assert epoch == 1 and journal.cursors()["ops"] == (1, 1)
    assert journal.retries("ops") == []  # a replay starts clean

    # An ack from before the reset (old epoch) must not undo the replay.
    assert not await journal.set_cursor("ops", 9, 0)
    assert journal.cursors()["ops"] == (1, 1)
    assert await journal.set_cursor("ops", 2, 1)
    assert journal.cursors()["ops"] == (2, 1)
    assert await journal.reset_cursor("ops", 0) == 2


async def test_set_cursor_clears_retries_up_to_it(journal: Store) -> None:
    await journal.set_retry("ops", 3, 1, 0.0, "e")
    await journal.set_retry("ops", 8, 1, 0.0, "e")
    await journal.set_retry("audit", 3, 1, 0.0, "e")
    await journal.set_cursor("ops", 5, 0)
    assert sorted((name, seq) for name, seq, *_ in journal.retries()) == [("audit", 3), ("ops", 8)]
    await journal.clear_retry("ops", 8)
    assert [(name, seq) for name, seq, *_ in journal.retries()] == [("audit", 3)]


async def test_dead_letters_replay_cycle(journal: Store) -> None:
    await journal.append([item(i) for i in range(4)])
    await journal.set_retry("ops", 1, 3, 0.0, "503")
    failure = new_event("hookbus.delivery.failed", {"subscriber": "ops"}, source="hookbus://h/subscribers/ops",
                        id_="dead-letter:1")
    first, accepted = await journal.add_dead_letter("ops", 1, 3, "410 gone", (failure, failure.to_json()))
    assert [(a.seq, a.duplicate) for a in accepted] == [(5, False)]  # the alert, in the same commit
    assert journal.retries("ops") == []
    second, _ = await journal.add_dead_letter("ops", 2, 1, "400", None)
    third, _ = await journal.add_dead_letter("audit", 3, 1, "disk full", None)
    assert journal.count_dead() == {"ops": 2, "audit": 1}

    # The same event failing again is the same dead letter, and the same alert.
    again, accepted = await journal.add_dead_letter("ops", 1, 5, "410 gone again", (failure, failure.to_json()))
    assert again == first and [(a.seq, a.duplicate) for a in accepted] == [(5, True)]
    [letter] = [d for d in journal.dead_letters("ops") if d.id == first]
    assert (letter.attempts, letter.error, letter.state) == (5, "410 gone again", "dead")

    assert await journal.mark_replay([first], None) == 1
    assert await journal.mark_replay([first], None) == 0  # already queued
    assert [d.id for d in journal.dead_letters(state="replaying")] == [first]
    assert await journal.mark_replay(None, "ops") == 1  # the other one of ops
    assert {d.id for d in journal.dead_letters(state="replaying")} == {first, second}
    assert journal.count_dead() == {"audit": 1}

    await journal.finish_replay(first, True)
    await journal.finish_replay(second, False, "still 400")
    states = {d.id: (d.state, d.error) for d in journal.dead_letters()}
    assert states[first][0] == "delivered"
    assert states[second] == ("dead", "still 400")
    assert states[third][0] == "dead"
    assert await journal.mark_replay(None, None) == 2  # everything dead, of every subscriber
    assert await journal.mark_replay([], None) == 0


async def _age(journal: Store, up_to_seq: int, seconds: float) -> None:
    await journal.write(lambda conn: conn.execute(sql(journal, "UPDATE events SET at = at - ? WHERE seq <= ?"),
                                                  (seconds, up_to_seq)))


async def test_prune_needs_old_and_passed_by_every_cursor(journal: Store) -> None:
    await journal.append([item(i) for i in range(1, 11)])
    await _age(journal, 8, 7200)  # 1..8 are older than the retention, 9..10 are new
    await journal.set_cursor("fast", 10, 0)
    await journal.set_cursor("slow", 6, 0)
    await journal.add_dead_letter("fast", 2, 3, "410", None)
    await journal.set_retry("fast", 3, 1, 0.0, "503")

    removed = await journal.prune(3600)
    left = [e.seq for e in journal.read(0, 100)[0]]
    # 1, 4, 5, 6: old and at/below both cursors. 2 is a dead letter, 3 is retrying,
    # 7..8 are past the slow cursor, 9..10 are new.
    assert removed == 4
    assert left == [2, 3, 7, 8, 9, 10]

    await journal.set_cursor("slow", 10, 0)
    assert await journal.prune(3600) == 2  # 7, 8
    dead = journal.dead_letters("fast")[0]
    await journal.finish_replay(dead.id, True)
    await journal.clear_retry("fast", 3)
    assert await journal.prune(3600) == 2  # a delivered dead letter and a cleared retry may go
    assert [e.seq for e in journal.read(0, 100)[0]] == [9, 10]
    assert await journal.prune(10**9) == 0


async def test_prune_with_no_cursors_keeps_new_events(journal: Store) -> None:
    await journal.append([item(i) for i in range(1, 5)])
    await _age(journal, 2, 100)
    assert await journal.prune(50) == 2
    assert [e.seq for e in journal.read(0, 100)[0]] == [3, 4]


async def test_read_filters_and_reports_scan(journal: Store) -> None:
    await journal.append([item(i, type_="backup.job.finished" if i % 2 else "backup.log") for i in range(1, 7)])
    stored, scanned = journal.read(0, 2, compile_globs(["backup.log"]).match)
    assert [e.seq for e in stored] == [2, 4] and scanned == 4
    stored, scanned = journal.read(4, 10, compile_globs(["backup.log"]).match)
    assert [e.seq for e in stored] == [6] and scanned == 6
    stored, scanned = journal.read(1, 3)  # unfiltered: exactly the next `limit` events
    assert [e.seq for e in stored] == [2, 3, 4] and scanned == 4
    assert journal.get(3) is not None and journal.get(99) is None


async def test_filtered_read_returns_the_bodies_of_matches_only_within_its_scan(journal: Store) -> None:
    events = [item(i, type_="backup.log" if i % 3 == 0 else "backup.report") for i in range(3000)]
    await journal.append(events)
    logs = compile_globs(["backup.log"]).match
    stored, scanned = journal.read(0, 1000, logs, scan=2400)  # 800 matches among the first 2,400 rows
    assert [e.seq for e in stored] == list(range(1, 2401, 3)) and scanned == 2400
    assert [e.body for e in stored] == [body for _, body in events[0:2400:3]] and {e.type for e in stored} == {"backup.log"}
    stored, scanned = journal.read(2400, 100, logs)
    assert len(stored) == 100 and stored[-1].seq == scanned == 2698


async def test_open_jobs_are_kept_found_and_closed_by_key(journal: Store) -> None:
    job = OpenJob("job-1", "2026-11-21T03:00:00Z")
    await journal.open_job("ping:k:", job)
    assert await journal.find_open_job("ping:k:") == job and await journal.find_open_job("ping:other:") is None
    await journal.close_job("ping:k:", "job-0")  # a close for another job leaves this one
    assert await journal.find_open_job("ping:k:") == job
    await journal.close_job("ping:k:", "job-1")
    assert await journal.find_open_job("ping:k:") is None


async def test_an_open_job_whose_finished_event_is_stored_counts_as_closed(journal: Store) -> None:
    job, finished = OpenJob("job-2", "t"), ("test://units", "{job_id}/job.finished")
    await journal.open_job("k", job)
    assert await journal.find_open_job("k", finished) == job
    await journal.append([item("job-2/job.finished")])
    assert await journal.find_open_job("k", finished) is None
    assert await journal.find_open_job("k") is None  # and it is forgotten


async def test_append_with_job_pairs_starts_and_finishes_written_in_one_commit(journal: Store) -> None:
    """Starts and finishes for one key issued together go to the writer in one
    batch (one commit): each finish still finds the start written before it."""
    finish = ("test://units", "{job_id}/job.finished")
    made: list[OpenJob | None] = []

    def make(name: str) -> Any:
        return lambda job: made.append(job) or [item(f"{job.job_id if job else 'none'}/{name}")]

    jobs = [OpenJob(f"job-{i}", f"t{i}") for i in range(3)]
    futures = []
    for i, job in enumerate(jobs):
        futures.append(journal.append_with_job("k", make(f"job.started{i}"), start=job))
        futures.append(journal.append_with_job("k", make("job.finished"), finish=finish))
    futures.append(journal.append_with_job("k", make("log")))  # nothing open any more
    done = await asyncio.gather(*futures)
    assert made == [jobs[0], jobs[0], jobs[1], jobs[1], jobs[2], jobs[2], None]
    assert [d.job for d in done] == made and [d.accepted[0].seq for d in done] == list(range(1, 8))
    assert [e.id for d in done for e, _ in d.events] == [
        "job-0/job.started0", "job-0/job.finished", "job-1/job.started1", "job-1/job.finished",
        "job-2/job.started2", "job-2/job.finished", "none/log"]
    assert await journal.find_open_job("k") is None


async def test_append_with_job_refuses_alone_the_write_whose_events_fail(journal: Store) -> None:
    def broken(job: OpenJob | None) -> list[tuple[Event, bytes]]:
        raise EventError("data", "too large")

    job = OpenJob("job-1", "t")
    good = journal.append_with_job("k", lambda j: [item("a")], start=job)
    bad = journal.append_with_job("k", broken, finish=("test://units", "{job_id}/job.finished"))
    other = journal.append([item("b")])
    assert (await good).accepted[0].seq == 1
    with pytest.raises(EventError):
        await bad
    assert (await other)[0].seq == 2
    assert await journal.find_open_job("k") == job  # the refused finish closed nothing
    with pytest.raises(ValueError, match="not both"):
        journal.append_with_job("k", lambda j: [], start=job, finish=("s", "{job_id}"))


async def test_append_with_job_takes_a_job_whose_finished_event_is_stored_as_closed(journal: Store) -> None:
    finish = ("test://units", "{job_id}/job.finished")
    await journal.open_job("k", OpenJob("job-2", "t"))
    await journal.append([item("job-2/job.finished")])  # a hookbus before stored it and stopped before the close
    done = await journal.append_with_job("k", lambda job: [item("other/job.finished")], finish=finish)
    assert done.job is None and await journal.find_open_job("k") is None




# -- restarts and two nodes ------------------------------------------------------


async def test_close_commits_writes_not_yet_handed_to_the_writer(opener: Callable[[], Store]) -> None:
    store = opener()
    future = store.append([item("last")])  # still waiting for the loop's next turn
    store.close()
    assert (await asyncio.wait_for(future, 5))[0].seq == 1
    reopened = opener()
    try:
        assert reopened.last_seq == 1 and reopened.event_count() == 1
        assert reopened.identity == store.identity  # the same store, not a new one
    finally:
        reopened.close()


async def test_seq_survives_reopen_and_prune(opener: Callable[[], Store]) -> None:
    store = opener()
    await store.append([item(i) for i in range(3)])
    assert await store.prune(0) == 3 and store.event_count() == 0
    store.close()
    store = opener()
    try:
        assert store.last_seq == 3
        [acc] = await store.append([item(9)])
        assert acc.seq == 4  # a seq is never reused, even once pruned
        assert store.read(0, 10) == ([store.get(4)], 4)
    finally:
        store.close()


async def test_two_nodes_appending_at_once_get_one_gap_free_seq_and_store_a_repeat_once(pg_url: str) -> None:
    """Two PostgreSQL store objects on one database (two nodes; SQLite has one writer by
    design, its data_dir lock keeps a second broker off the file): concurrent appends from
    both, with the same events sent to both, give each event one seq, all seqs gap-free."""
    nodes = [PostgresStore(pg_url), PostgresStore(pg_url)]
    try:
        async def writer(node: Store, w: int) -> list[tuple[str, int, bool]]:
            out = []
            for r in range(25):
                batch = [item(f"{w}-{r}-{k}") for k in range(1 + (w + r) % 4)] + [item(f"shared-{r}")]
                accepted = await node.append(batch)
                out += [(a.id, a.seq, a.duplicate) for a in accepted]
            return out

        # Each node's writes go from its own thread's loop, as two processes' would.
        def run(node: Store, first: int) -> list[tuple[str, int, bool]]:
            async def many() -> list[tuple[str, int, bool]]:
                answers = await asyncio.gather(*(writer(node, w) for w in range(first, first + 8)))
                return [a for answer in answers for a in answer]
            return asyncio.run(many())

        writing = True
        looks: list[int] = []

        def reader() -> None:
            """Seqs become visible in their order: whatever a reader sees is 1..n, never a later
            seq before an earlier one (a subscriber reading up to the head would skip that one)."""
            while writing:
                seqs = [e.seq for e in nodes[1].read(0, 100_000)[0]]
                assert seqs == list(range(1, len(seqs) + 1)), "a seq visible before a lower one"
                looks.append(len(seqs))

        reading = asyncio.create_task(asyncio.to_thread(reader))
        try:
            a, b = await asyncio.gather(asyncio.to_thread(run, nodes[0], 0), asyncio.to_thread(run, nodes[1], 8))
        finally:
            writing = False
            await reading
        assert len(set(looks)) > 3  # it looked while the head moved
        answers = a + b
        seq_of: dict[str, set[int]] = {}
        for id_, seq, _ in answers:
            seq_of.setdefault(id_, set()).add(seq)
        assert all(len(seqs) == 1 for seqs in seq_of.values())  # a repeat answers its first seq, on either node
        new = sorted(seq for _, seq, dup in answers if not dup)
        assert new == list(range(1, len(seq_of) + 1))  # each event stored once; no gap
        stored, _ = nodes[1].read(0, 10_000)
        assert [e.seq for e in stored] == new and nodes[0].event_count() == len(seq_of)
        [after] = await nodes[0].append([item("after")])
        assert after.seq == len(seq_of) + 1  # a node learns the head the other moved
    finally:
        for node in nodes:
            node.close()


async def test_two_nodes_writing_the_same_rows_in_opposite_orders_neither_deadlock_nor_fail(
        pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Batches that append and move two cursors, on two nodes, the cursors in opposite orders:
    both take the counter row first, so they never wait for each other the other way round
    (no deadlock, and so no ingest refused for one). Batches that only move the cursors can
    deadlock; PostgreSQL breaks it and the store runs the loser again. Every write succeeds."""
    nodes = [PostgresStore(pg_url), PostgresStore(pg_url)]
    try:
        def run(node: Store, names: tuple[str, str], tag: str, rounds: range, appends: bool) -> None:
            async def go() -> None:
                for r in rounds:
                    async def append(r: int = r) -> list[Any]:  # a task like the others: one batch for all three
                        return await node.append([item(f"{tag}-{r}")])

                    writes = [node.set_cursor(names[0], r, 0), node.set_cursor(names[1], r, 0)]
                    if appends:  # in the same batch, between the two cursor moves
                        writes.insert(1, append())
                    assert all(await asyncio.gather(*writes))
            asyncio.run(go())

        async def both(rounds: range, appends: bool) -> None:
            await asyncio.gather(asyncio.to_thread(run, nodes[0], ("a", "b"), "x", rounds, appends),
                                 asyncio.to_thread(run, nodes[1], ("b", "a"), "y", rounds, appends))

        with caplog.at_level(logging.WARNING, "hookbus.journal"):
            await both(range(1, 61), True)
        assert "conflicted" not in caplog.text
        assert [e.seq for e in nodes[0].read(0, 1000)[0]] == list(range(1, 121))
        await both(range(61, 66), False)
        assert nodes[0].cursors() == {"a": (65, 0), "b": (65, 0)}
    finally:
        for node in nodes:
            node.close()


# -- leases, checks, silences, the trail --------------------------------------------


async def test_leases_hold_a_name_until_they_expire(journal: Store) -> None:
    mine, theirs = "elsewhere pid 1 (a)", "elsewhere pid 2 (b)"  # another host: no pid check applies
    await journal.take_lease("ops", mine, 60)
    assert journal.lease_holder("ops") == mine and journal.lease_holder("audit") is None
    await journal.take_lease("ops", mine, 60)  # the holder again: fine
    with pytest.raises(LeaseHeld, match="already running"):
        await journal.take_lease("ops", theirs, 60)
    await journal.renew_lease("ops", mine, -1)  # expired now
    await journal.take_lease("ops", theirs, 60)
    assert journal.lease_holder("ops") == theirs


async def test_a_runner_lease_is_timed_by_the_database_not_by_a_nodes_clock(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Node b's clock an hour ahead: a live runner's lease taken through node a still holds
    for b (by its clock it would have expired), and one renewed into the past is free."""
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        await a.take_lease("ops", "elsewhere pid 1 (a)", 60)
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 3600)  # only b runs meanwhile
        with pytest.raises(LeaseHeld, match="already running"):
            await b.take_lease("ops", "elsewhere pid 2 (b)", 60)
        monkeypatch.setattr(time, "time", real)
        await a.renew_lease("ops", "elsewhere pid 1 (a)", -1)
        await b.take_lease("ops", "elsewhere pid 2 (b)", 60)
        assert b.lease_holder("ops") == "elsewhere pid 2 (b)"
    finally:
        a.close()
        b.close()


async def test_checks_and_silences_are_kept(journal: Store) -> None:
    assert journal.load_checks().seq == 0
    await journal.save_checks(7, {"nightly": b'{"state":"up"}'}, {"nightly": b"[1,2]"})
    await journal.save_checks(9, {"nightly": b'{"state":"down"}', "weekly": b"{}"}, {})
    snap = journal.load_checks()
    assert (snap.seq, snap.states, snap.runs) == (9, {"nightly": b'{"state":"down"}', "weekly": b"{}"}, {"nightly": b"[1,2]"})
    now = time.time()
    one = await journal.add_silence(Silence(0, "nightly", None, None, now - 10, now + 3600, "maintenance", now))
    two = await journal.add_silence(Silence(0, None, "db", "backup.job.finished", now, now + 60, "", now))
    assert one.id and two.id and one.id != two.id
    assert [s.id for s in journal.silences(now)] == [one.id, two.id]
    assert await journal.end_silence(one.id, now + 1) and not await journal.end_silence(one.id, now + 2)
    assert journal.silences(now + 1) == [two]


async def test_the_delivery_trail_keeps_attempts_and_runs_and_goes_with_its_events(journal: Store) -> None:
    await journal.append([item(i) for i in range(1, 6)])
    at = time.time()
    await journal.record_deliveries([Delivery(2, "ops", 1, at, FAILED, 503, "503 busy"),
                                     Delivery(2, "ops", 2, at + 1, DELIVERED, 200)],
                                    [DeliveredRun("audit", 1, 5, at + 2)])
    await journal.record_deliveries([Delivery(2, "ops", 1, at, FAILED, 503, "503 busy")])  # resent: stored once
    trail = journal.deliveries([2, 4])
    assert [(d.seq, d.subscriber, d.attempt, d.outcome) for d in trail] == [
        (2, "audit", 1, DELIVERED), (2, "ops", 1, FAILED), (2, "ops", 2, DELIVERED), (4, "audit", 1, DELIVERED)]
    assert [d.attempt for d in journal.deliveries([2], "ops")] == [1, 2]
    assert [d.attempt for d in journal.recent_deliveries("ops", 1)] == [2]
    many = [Delivery(3, "ops", n, at + n, FAILED, 503) for n in range(1, 20)]
    await journal.record_deliveries(many)
    assert [d.attempt for d in journal.deliveries([3], "ops")] == [1, *range(10, 20)]  # the first and the last ten
    await journal.set_cursor("ops", 5, 0)
    await journal.set_cursor("audit", 5, 0)
    await _age(journal, 5, 7200)
    assert await journal.prune(3600) == 5
    assert journal.deliveries([1, 2, 3, 4, 5]) == []


async def test_text_with_nul_from_outside_is_kept_where_it_can_be(journal: Store) -> None:
    """An event's id, source and type may hold NUL (valid JSON): stored and deduplicated
    as sent. Free text (an error, a job id from a ping's ?rid=) keeps everything but the NUL."""
    event = Event(id="a\x00b", source="test://nul\x00", type="backup.\x00log")
    [first] = await journal.append([(event, event.to_json())])
    [again] = await journal.append([(event, event.to_json())])
    assert again.duplicate and again.seq == first.seq
    stored = journal.get(first.seq)
    assert stored is not None and stored.type == "backup.\x00log"
    await journal.set_retry("ops", first.seq, 1, 0.0, "bad\x00reply")
    [(_, _, _, _, error)] = journal.retries("ops")
    assert error.startswith("bad") and error.endswith("reply")
    await journal.open_job("k", OpenJob("rid\x00", "t"))
    found = await journal.find_open_job("k")
    assert found is not None and found.job_id.startswith("rid")


# -- PostgreSQL down -------------------------------------------------------------------


async def test_postgres_down_refuses_writes_and_reads_then_resumes_by_itself() -> None:
    from tests.pg import server_or_skip

    with server_or_skip() as server:
        store = PostgresStore(server.new_database())
        try:
            await store.append([item(1)])
            server.stop("fast")
            with pytest.raises(JournalError) as refused:
                await store.append([item(2)])
            assert server.password not in str(refused.value)
            with pytest.raises(JournalError):
                store.read(0, 10)
            server.start()
            [accepted] = await store.append([item(2)])  # no restart of the store: it connects again
            assert accepted.seq == 2  # nothing half-kept from the refused write
            assert [e.seq for e in store.read(0, 10)[0]] == [1, 2]
        finally:
            store.close()


def test_a_postgres_store_that_cannot_connect_says_where_without_the_password(pg_server: PgServer) -> None:
    wrong = pg_server.url().replace(pg_server.password, "not-the-password-xyz")
    with pytest.raises(JournalError) as info:
        PostgresStore(wrong)
    text = str(info.value)
    assert "not-the-password-xyz" not in text and "127.0.0.1" in text and "password authentication failed" in text


async def test_a_database_of_a_newer_hookbus_is_refused(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.write(lambda conn: conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema'"))
    store.close()
    with pytest.raises(JournalError, match="schema 99"):
        PostgresStore(pg_url)
