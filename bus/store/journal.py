"""The journal: the durable record of every accepted event.

SQLite in WAL mode with one writer thread. Writers hand it small operations;
it runs everything that queued up while the last commit was on disk in one
transaction (group commit), so each fsync is shared by many callers. `seq` is
assigned by that one writer and so is gap-free.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from hookbus.bus.events.event import Event
from hookbus.bus.events.host import host_name
from hookbus.bus.events.silences import Silence
from hookbus.bus.store import checkstate, nodes, openjobs, trail
from hookbus.bus.store.base import (
    Accepted,
    CheckSnapshot,
    Claim,
    DeadLetter,
    DeliveredRun,
    Delivery,
    JobAppend,
    LeaseHeld,
    NodeBeat,
    OpenJob,
    StoredEvent,
)
from hookbus.bus.store.base import JournalError as JournalError  # imported from here by cli and http
from hookbus.bus.store.groupcommit import Done, GroupCommit, finish
from hookbus.bus.store.groupcommit import settle_future as settle_future  # imported from here by delivery

log = logging.getLogger("hookbus.journal")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq    INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    id     TEXT NOT NULL,
    type   TEXT NOT NULL,
    at     REAL NOT NULL,
    body   BLOB NOT NULL,
    UNIQUE (source, id)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (
    subscriber TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    epoch      INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS retries (
    subscriber TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    attempts   INTEGER NOT NULL,
    next_at    REAL NOT NULL,
    error      TEXT NOT NULL,
    PRIMARY KEY (subscriber, seq)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    subscriber  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    attempts    INTEGER NOT NULL,
    error       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    state       TEXT NOT NULL DEFAULT 'dead',   -- dead | replaying | delivered
    replayed_at REAL,
    UNIQUE (subscriber, seq)
);
-- one live runner per subscriber name (take_lease)
CREATE TABLE IF NOT EXISTS leases (
    subscriber TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
"""


REPLAY_CHUNK = 500  # dead-letter ids per statement and per commit: well under SQLite's variable limit


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


class _OpRefused(Exception):
    """An op of a batch failed by its own fault (see Journal._run_ops)."""


INSERT_EVENT = "INSERT INTO events(seq, source, id, type, at, body) VALUES (?,?,?,?,?,?) ON CONFLICT(source, id) DO NOTHING"
ROWS_PER_INSERT = 1000  # 6 parameters a row: well under SQLite's 32,766


@functools.lru_cache(maxsize=64)
def _insert_rows(n: int) -> str:
    return INSERT_EVENT.replace("(?,?,?,?,?,?)", ",".join(["(?,?,?,?,?,?)"] * n))


class _Append:
    """A write op that appends events. Run alone it inserts them one by one; the
    writer inserts a run of these together with one statement per thousand rows
    (see Journal._append_run): each statement is one step, and so one release of
    the GIL, instead of two per event."""

    __slots__ = ("events", "journal")

    def __init__(self, journal: Journal, events: list[tuple[Event, bytes]]) -> None:
        self.journal, self.events = journal, events

    def __call__(self, conn: sqlite3.Connection) -> list[Accepted]:
        journal = self.journal
        out: list[Accepted] = []
        now = time.time()
        for event, body in self.events:
            seq = journal.last_seq + 1
            # One statement for the usual new event; a repeat of (source, id) inserts nothing.
            if conn.execute(INSERT_EVENT, (seq, event.source, event.id, event.type, now, body)).rowcount:
                journal.last_seq = seq
                out.append(Accepted(event.id, seq, False))
                continue
            first = _seq_of(conn, event.source, event.id)
            assert first is not None  # the insert just met it
            out.append(Accepted(event.id, first, True))
        return out


def _seq_of(conn: sqlite3.Connection, source: str, id_: str) -> int | None:
    """The seq of the stored event (source, id_), if there is one."""
    row = conn.execute("SELECT seq FROM events WHERE source=? AND id=?", (source, id_)).fetchone()
    return int(row[0]) if row else None


def _find_open_job(conn: sqlite3.Connection, key: str, finished: tuple[str, str] | None) -> OpenJob | None:
    """The open job under key; with `finished` (see Journal.find_open_job), None
    (and the job forgotten) when its finished event is already stored."""
    job = openjobs.find(conn, key)
    if job is None or finished is None:
        return job
    source, template = finished
    if _seq_of(conn, source, template.format(job_id=job.job_id)) is None:
        return job
    openjobs.forget(conn, key, job.job_id)
    return None


def _rowcount(sql: str, args: list[Any]) -> Callable[[sqlite3.Connection], int]:
    """An op that runs one statement and answers how many rows it changed."""
    return lambda conn: conn.execute(sql, args).rowcount


# An op and whom to tell.
_Op = tuple[Callable[[sqlite3.Connection], Any], Done]


def _within(cursor: sqlite3.Cursor, max_bytes: int | None) -> list[Any]:
    """The (seq, type, body) rows of `cursor` until their bodies reach `max_bytes` (at least one)."""
    if max_bytes is None:
        return cursor.fetchall()
    rows, size = [], 0
    for row in cursor:
        rows.append(row)
        size += len(row[2])
        if size >= max_bytes:
            break
    return rows


class Journal(GroupCommit[sqlite3.Connection]):
    """Durable, gap-free event log with subscriber cursors, retries and dead letters:
    the SQLite `Store` (base.py)."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        super().__init__("journal-writer")
        self.path = path
        self.synchronous = synchronous
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        try:
            self._conn = self._connect()
            self._conn.executescript(SCHEMA + openjobs.SCHEMA + checkstate.SCHEMA + trail.SCHEMA + nodes.SCHEMA)
            row = self._conn.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
            max_row = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
            self.identity: int = self._identity()
            openjobs.hash_plain_keys(self._conn)
            trail.migrate(self._conn)
        except sqlite3.DatabaseError as exc:  # a corrupted header: one line naming the file, no traceback
            raise JournalError(f"journal {path} cannot be opened ({exc}); move it aside to start an empty "
                               "journal, or restore it from a backup") from None
        self.last_seq: int = max(row[0] if row else 0, max_row[0])
        self._thread.start()

    @property
    def location(self) -> str:
        return str(self.path)

    def _identity(self) -> int:
        """A random number chosen when the journal is created: a subscriber that keeps
        its own position (jsonl) tells a new, emptied journal from the one it followed."""
        row = self._conn.execute("SELECT value FROM meta WHERE key='identity'").fetchone()
        if row:
            return int(row[0])
        identity = random.SystemRandom().randrange(1, 2**62)
        self._conn.execute("INSERT INTO meta(key, value) VALUES ('identity', ?)", (identity,))
        return identity

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    # -- writing ---------------------------------------------------------

    def _writer_stopped(self) -> None:
        self._conn.close()

    def _run_batch(self, batch: list[_Op]) -> None:
        conn = self._conn
        saved_seq = self.last_seq
        try:
            try:
                results = self._run_ops(conn, batch, careful=False)
            except _OpRefused:
                # One op failed by its own fault: run the batch again, each op in a
                # savepoint, so that only that op is refused and the others commit.
                conn.execute("ROLLBACK")
                self.last_seq = saved_seq
                results = self._run_ops(conn, batch, careful=True)
        except sqlite3.Error as exc:
            log.error("journal commit failed: %s", exc)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self.last_seq = saved_seq
            error = JournalError(f"journal commit failed: {exc}")
            finish([(done, None, error) for _, done in batch])
            return
        finish([(done, result, refusal) for (_, done), (result, refusal) in zip(batch, results, strict=True)])

    def _run_ops(self, conn: sqlite3.Connection, batch: list[_Op], careful: bool) -> list[tuple[Any, BaseException | None]]:
        """Run the ops in one transaction and commit. Without `careful` (the usual
        case: savepoints cost a statement each, twice per op) an op's own failure
        raises _OpRefused; with it, that op is rolled back alone and reported."""
        conn.execute("BEGIN IMMEDIATE")
        results = self._run_careful(conn, batch) if careful else self._run_fast(conn, batch)
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_seq', ?)", (self.last_seq,))
        conn.execute("COMMIT")
        return results

    def _run_fast(self, conn: sqlite3.Connection, batch: list[_Op]) -> list[tuple[Any, BaseException | None]]:
        results: list[tuple[Any, BaseException | None]] = []
        start = 0
        while start < len(batch):
            end = start
            while end < len(batch) and isinstance(batch[end][0], _Append):
                end += 1
            try:
                if end > start:  # consecutive appends: their events in as few statements as can be
                    appends: list[_Append] = [op for op, _ in batch[start:end]]  # type: ignore[misc]
                    results += ((accepted, None) for accepted in self._append_run(conn, appends))
                else:
                    results.append((batch[start][0](conn), None))
                    end = start + 1
            except sqlite3.Error:
                raise  # the database itself failed (disk full, I/O): the whole batch fails
            except Exception as exc:
                raise _OpRefused from exc
            start = end
        return results

    def _run_careful(self, conn: sqlite3.Connection, batch: list[_Op]) -> list[tuple[Any, BaseException | None]]:
        results: list[tuple[Any, BaseException | None]] = []
        for fn, _ in batch:
            conn.execute("SAVEPOINT op")
            op_seq = self.last_seq
            try:
                results.append((fn(conn), None))
                conn.execute("RELEASE op")
            except sqlite3.Error:
                raise
            except Exception as exc:  # the op's own fault (bad argument); the others still commit
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                self.last_seq = op_seq  # its rows are gone: hand their seqs out again, no gap
                results.append((None, exc))
        return results

    def _append_run(self, conn: sqlite3.Connection, ops: list[_Append]) -> list[list[Accepted]]:
        """Insert the events of consecutive append ops with as few statements as
        possible. If any of them is a repeat, those rows are taken out again and
        each op runs on its own, which finds the repeats (rare: a client's retry)."""
        first = self.last_seq
        now = time.time()
        rows: list[Any] = []
        seq = first
        for op in ops:
            for event, body in op.events:
                seq += 1
                rows += (seq, event.source, event.id, event.type, now, body)
        width = 6 * ROWS_PER_INSERT
        inserted = 0
        for start in range(0, len(rows), width):
            chunk = rows[start:start + width]
            inserted += conn.execute(_insert_rows(len(chunk) // 6), chunk).rowcount
        if inserted * 6 != len(rows):
            conn.execute("DELETE FROM events WHERE seq > ?", (first,))
            return [op(conn) for op in ops]
        self.last_seq = seq
        out: list[list[Accepted]] = []
        seq = first
        for op in ops:
            accepted = []
            for event, _ in op.events:
                seq += 1
                accepted.append(Accepted(event.id, seq, False))
            out.append(accepted)
        return out

    def append(self, events: list[tuple[Event, bytes]],
               then: Callable[[list[Accepted]], None] | None = None) -> asyncio.Future[list[Accepted]]:
        """Commit events (with their JSON bodies); the future has their seqs once
        durable; `then` as for write().

        A (source, id) already in the journal is not stored again: it answers
        with its first seq and duplicate=True.
        """
        return self.write(_Append(self, events), then)

    def append_sync(self, events: list[tuple[Event, bytes]]) -> list[Accepted]:
        return self.write_sync(_Append(self, events))

    async def set_cursor(self, subscriber: str, seq: int, epoch: int) -> bool:
        """Move a subscriber's cursor forward; a stale epoch (after a replay reset) is ignored."""

        def op(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT seq, epoch FROM cursors WHERE subscriber=?", (subscriber,)).fetchone()
            if row and row[1] != epoch:
                return False
            conn.execute(
                "INSERT INTO cursors(subscriber, seq, epoch, updated_at) VALUES (?,?,?,?) "
                "ON CONFLICT(subscriber) DO UPDATE SET seq=MAX(seq, excluded.seq), updated_at=excluded.updated_at",
                (subscriber, seq, epoch, time.time()),
            )
            conn.execute("DELETE FROM retries WHERE subscriber=? AND seq<=?", (subscriber, seq))
            return True

        return await self.write(op)

    async def reset_cursor(self, subscriber: str, seq: int) -> int:
        """Put a subscriber's cursor at seq (replay from seq+1); return the new epoch."""

        def op(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT epoch FROM cursors WHERE subscriber=?", (subscriber,)).fetchone()
            epoch = (row[0] if row else 0) + 1
            conn.execute(
                "INSERT INTO cursors(subscriber, seq, epoch, updated_at) VALUES (?,?,?,?) "
                "ON CONFLICT(subscriber) DO UPDATE SET seq=excluded.seq, epoch=excluded.epoch, updated_at=excluded.updated_at",
                (subscriber, seq, epoch, time.time()),
            )
            conn.execute("DELETE FROM retries WHERE subscriber=?", (subscriber,))
            return epoch

        return await self.write(op)

    async def set_retry(self, subscriber: str, seq: int, attempts: int, next_at: float, error: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO retries(subscriber, seq, attempts, next_at, error) VALUES (?,?,?,?,?)",
                (subscriber, seq, attempts, next_at, error),
            )

        await self.write(op)

    async def clear_retry(self, subscriber: str, seq: int) -> None:
        await self.write(lambda conn: conn.execute("DELETE FROM retries WHERE subscriber=? AND seq=?", (subscriber, seq)))

    async def add_dead_letter(
        self, subscriber: str, seq: int, attempts: int, error: str, failure: tuple[Event, bytes] | None
    ) -> tuple[int, list[Accepted]]:
        """Record a dead letter, and in the same commit the `hookbus.delivery.failed` event."""
        append = _Append(self, [failure]) if failure else None

        def op(conn: sqlite3.Connection) -> tuple[int, list[Accepted]]:
            conn.execute(
                "INSERT INTO dead_letters(subscriber, seq, attempts, error, created_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT(subscriber, seq) DO UPDATE SET attempts=excluded.attempts, error=excluded.error, "
                "created_at=excluded.created_at, state='dead'",
                (subscriber, seq, attempts, error, time.time()),
            )
            conn.execute("DELETE FROM retries WHERE subscriber=? AND seq=?", (subscriber, seq))
            row = conn.execute("SELECT id FROM dead_letters WHERE subscriber=? AND seq=?", (subscriber, seq)).fetchone()
            return row[0], (append(conn) if append else [])

        return await self.write(op)

    async def mark_replay(self, ids: Iterable[int] | None, subscriber: str | None) -> int:
        """Queue dead letters for redelivery: by id, by subscriber, or all. Return how many.
        Ids go REPLAY_CHUNK at a time, each chunk its own op: a request with 300,000
        ids neither hits SQLite's variable limit nor holds one group commit for long."""
        base = "UPDATE dead_letters SET state='replaying' WHERE state='dead'" + (" AND subscriber=?" if subscriber else "")
        head: list[Any] = [subscriber] if subscriber else []
        if ids is None:
            return await self.write(_rowcount(base, head))
        id_list = list(ids)
        queued = 0
        for start in range(0, len(id_list), REPLAY_CHUNK):
            chunk = id_list[start:start + REPLAY_CHUNK]
            sql = f"{base} AND id IN ({','.join('?' * len(chunk))})"
            queued += await self.write(_rowcount(sql, [*head, *chunk]))
        return queued

    async def take_lease(self, subscriber: str, holder: str, ttl: float) -> None:
        """Hold `subscriber` for `holder` ("host pid N …") for ttl seconds. Raise LeaseHeld
        when another runner holds it and is alive: not expired, and on this host its
        process still exists (a runner killed a moment ago does not block its restart)."""
        host, pid = holder_host_pid(holder)

        def op(conn: sqlite3.Connection) -> None:
            now = time.time()
            row = conn.execute("SELECT holder, host, pid, expires_at FROM leases WHERE subscriber=?", (subscriber,)).fetchone()
            if row and row[0] != holder and row[3] > now and not (row[1] == host_name() and not pid_alive(row[2])):
                raise LeaseHeld(f"subscriber {subscriber} is already running ({row[0]}); "
                                "two runners of one name would deliver every event twice")
            conn.execute("INSERT OR REPLACE INTO leases(subscriber, holder, host, pid, expires_at) VALUES (?,?,?,?,?)",
                         (subscriber, holder, host, pid, now + ttl))

        await self.write(op)

    async def renew_lease(self, subscriber: str, holder: str, ttl: float) -> None:
        await self.write(lambda conn: conn.execute("UPDATE leases SET expires_at=? WHERE subscriber=? AND holder=?",
                                                   (time.time() + ttl, subscriber, holder)))

    # -- nodes and their claims (nodes.py) -------------------------------

    async def claim(self, name: str, holder: str, node: str, ttl: float) -> bool:
        return await self.write(lambda conn: nodes.claim(conn, name, holder, node, ttl))

    async def release(self, name: str, holder: str) -> None:
        await self.write(lambda conn: nodes.release(conn, name, holder))

    async def beat(self, node: str, holder: str, started_at: float) -> None:
        await self.write(lambda conn: nodes.beat(conn, node, holder, started_at))

    async def finish_replay(self, dead_id: int, ok: bool, error: str = "") -> None:
        def op(conn: sqlite3.Connection) -> None:
            if ok:
                conn.execute("UPDATE dead_letters SET state='delivered', replayed_at=? WHERE id=?", (time.time(), dead_id))
            else:
                conn.execute("UPDATE dead_letters SET state='dead', error=?, replayed_at=? WHERE id=?",
                             (error, time.time(), dead_id))

        await self.write(op)

    async def prune(self, older_than_s: float) -> int:
        """Delete events older than the retention that every subscriber has passed."""
        cutoff = time.time() - older_than_s

        def op(conn: sqlite3.Connection) -> int:
            (floor,) = conn.execute("SELECT COALESCE(MIN(seq), ?) FROM cursors", (self.last_seq,)).fetchone()
            gone = [seq for (seq,) in conn.execute(
                "DELETE FROM events WHERE at < ? AND seq <= ? "
                "AND seq NOT IN (SELECT seq FROM dead_letters WHERE state != 'delivered') "
                "AND seq NOT IN (SELECT seq FROM retries) RETURNING seq",
                (cutoff, floor),
            ).fetchall()]
            (oldest,) = conn.execute("SELECT COALESCE(MIN(seq), ?) FROM events", (self.last_seq + 1,)).fetchone()
            trail.forget(conn, gone, oldest)  # the trail goes with its events
            return len(gone)

        return await self.write(op)

    # -- the delivery trail (trail.py) -----------------------------------

    async def record_deliveries(self, records: list[Delivery], runs: list[DeliveredRun] | None = None) -> None:
        if records or runs:
            await self.write(lambda conn: trail.add(conn, records, runs))

    # -- checks: their evaluation and the silences (checkstate.py) -----

    async def save_checks(self, seq: int, states: dict[str, bytes], runs: dict[str, bytes]) -> None:
        await self.write(lambda conn: checkstate.save(conn, seq, states, runs))

    async def add_silence(self, silence: Silence) -> Silence:
        return await self.write(lambda conn: checkstate.add_silence(conn, silence))

    async def end_silence(self, silence_id: int, now: float) -> bool:
        return await self.write(lambda conn: checkstate.end_silence(conn, silence_id, now))

    # -- open jobs: a tool's start kept for its finish (openjobs.py) -----

    async def open_job(self, key: str, job: OpenJob) -> None:
        await self.write(lambda conn: openjobs.keep(conn, key, job))

    async def find_open_job(self, key: str, finished: tuple[str, str] | None = None) -> OpenJob | None:
        """The open job under key. With `finished` = (source, event id template with
        `{job_id}`), a job whose finished event is already in the journal (hookbus
        stopped between storing it and closing the job) counts as closed."""
        return await self.write(lambda conn: _find_open_job(conn, key, finished))

    async def close_job(self, key: str, job_id: str) -> None:
        await self.write(lambda conn: openjobs.forget(conn, key, job_id))

    def append_with_job(self, key: str, make: Callable[[OpenJob | None], list[tuple[Event, bytes]]], *,
                        start: OpenJob | None = None, finish: tuple[str, str] | None = None,
                        then: Callable[[JobAppend], None] | None = None) -> asyncio.Future[JobAppend]:
        """Look up or keep the open job under key and commit the events made for it,
        in one op of the writer: ops run one at a time, so no other write comes
        between the look-up and the append, and concurrent callers still share a
        commit (see `Store.append_with_job`)."""
        if start is not None and finish is not None:
            raise ValueError("append_with_job: a write either starts a job or finishes one, not both")

        def op(conn: sqlite3.Connection) -> JobAppend:
            job = start if start is not None else _find_open_job(conn, key, finish)
            events = make(job)  # before any row of this op is written; may refuse the op
            if start is not None:
                openjobs.keep(conn, key, start)
            elif finish is not None and job is not None:
                openjobs.forget(conn, key, job.job_id)
            return JobAppend(job, events, _Append(self, events)(conn))

        return self.write(op, then)

    # -- reading (any thread; WAL readers never block the writer) --------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def read(self, after: int, limit: int, types: Callable[[str], Any] | None = None, scan: int = 5000,
             max_bytes: int | None = None) -> tuple[list[StoredEvent], int]:
        """Return up to `limit` events with seq > after whose type passes `types`,
        and the seq up to which the journal was scanned (at most `scan` rows
        further when filtered); with `max_bytes`, stop after the event whose body
        reaches that many bytes (at least one event)."""
        conn = self._reader()
        conn.execute("BEGIN")  # one snapshot for all reads
        try:
            meta = conn.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
            if types is None:  # the first `limit` rows are the answer
                rows = _within(conn.execute("SELECT seq, type, body, at FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                                            (after, limit)), max_bytes)
                seen = len(rows)
                scanned = rows[-1][0] if rows else after
            else:  # look at types first; read only the bodies that match
                heads = conn.execute("SELECT seq, type FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                                     (after, max(scan, limit))).fetchall()
                seen = len(heads)
                scanned = after
                wanted: list[int] = []
                for seq, type_ in heads:
                    if len(wanted) >= limit:
                        break
                    scanned = seq
                    if types(type_):
                        wanted.append(seq)
                rows, budget = [], max_bytes
                for start in range(0, len(wanted), 500):
                    chunk = wanted[start:start + 500]
                    marks = ",".join("?" * len(chunk))
                    got = _within(conn.execute(f"SELECT seq, type, body, at FROM events WHERE seq IN ({marks}) ORDER BY seq",
                                               chunk), budget)
                    rows += got
                    if budget is not None:
                        budget -= sum(len(row[2]) for row in got)
                        if budget <= 0 and (len(got) < len(chunk) or start + len(chunk) < len(wanted)):
                            scanned = rows[-1][0]  # the byte budget ends the answer here
                            break
        finally:
            conn.execute("COMMIT")
        if not seen and meta:
            scanned = max(after, meta[0])  # everything up to the head was pruned
        return [StoredEvent(seq, type_, bytes(body), at) for seq, type_, body, at in rows], scanned

    def get(self, seq: int) -> StoredEvent | None:
        row = self._reader().execute("SELECT seq, type, body, at FROM events WHERE seq=?", (seq,)).fetchone()
        return StoredEvent(row[0], row[1], bytes(row[2]), row[3]) if row else None

    def load_checks(self) -> CheckSnapshot:
        return checkstate.load(self._reader())

    def silences(self, since: float) -> list[Silence]:
        return checkstate.silences(self._reader(), since)

    def deliveries(self, seqs: list[int], subscriber: str | None = None) -> list[Delivery]:
        return trail.read(self._reader(), seqs, subscriber)

    def recent_deliveries(self, subscriber: str | None = None, limit: int = 100) -> list[Delivery]:
        return trail.recent(self._reader(), subscriber, limit)

    def lease_holder(self, subscriber: str) -> str | None:
        row = self._reader().execute("SELECT holder FROM leases WHERE subscriber=?", (subscriber,)).fetchone()
        return str(row[0]) if row else None

    def watch(self, wake: Callable[[], None]) -> None:
        """One node per journal: no one else commits."""

    def nodes(self) -> list[NodeBeat]:
        return nodes.nodes(self._reader())

    def claims(self) -> list[Claim]:
        return nodes.claims(self._reader())

    def cursors(self) -> dict[str, tuple[int, int]]:
        rows = self._reader().execute("SELECT subscriber, seq, epoch FROM cursors").fetchall()
        return {name: (seq, epoch) for name, seq, epoch in rows}

    def retries(self, subscriber: str | None = None) -> list[tuple[str, int, int, float, str]]:
        sql = "SELECT subscriber, seq, attempts, next_at, error FROM retries"
        args = (subscriber,) if subscriber else ()
        rows = self._reader().execute(sql + (" WHERE subscriber=?" if subscriber else ""), args).fetchall()
        return [tuple(r) for r in rows]

    def dead_letters(self, subscriber: str | None = None, state: str | None = None, limit: int = 1000) -> list[DeadLetter]:
        sql = "SELECT id, subscriber, seq, attempts, error, created_at, state FROM dead_letters WHERE 1=1"
        args: list[Any] = []
        if subscriber:
            sql += " AND subscriber=?"
            args.append(subscriber)
        if state:
            sql += " AND state=?"
            args.append(state)
        rows = self._reader().execute(sql + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
        return [DeadLetter(*r) for r in rows]

    def count_dead(self, state: str = "dead") -> dict[str, int]:
        """Dead letters in `state` (dead, replaying, delivered), per subscriber."""
        rows = self._reader().execute(
            "SELECT subscriber, COUNT(*) FROM dead_letters WHERE state=? GROUP BY subscriber", (state,)).fetchall()
        return dict(rows)

    def event_count(self) -> int:
        return int(self._reader().execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def close(self) -> None:
        if self._closed:
            return
        self._stop_writer()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()


def runner_name() -> str:
    """How a runner names itself in a lease: host and pid say who holds a name."""
    return f"{host_name()} pid {os.getpid()} ({random.SystemRandom().getrandbits(32):08x})"


def holder_host_pid(holder: str) -> tuple[str, int]:
    host, _, rest = holder.partition(" pid ")
    pid = rest.split(" ", 1)[0]
    return host, int(pid) if pid.isdigit() else 0


def decode_body(body: bytes) -> dict[str, Any]:
    obj = orjson.loads(body)
    assert isinstance(obj, dict)
    return obj
