"""The journal's table of the delivery trail: per event and subscriber, each
attempt with its time, outcome, the receiver's status and a short reason. Run
inside the journal's writes, on its connection.

Runners report it in batches (the TRAIL control command); reasons come
scrubbed and cut by then. The bulk, events delivered at their first attempt,
comes as runs of consecutive seqs (`delivered_runs`: one row for many events,
each with the time of the run's last); `read` answers both alike. It is kept as long as its event: `prune` drops the
rows of the events it deletes (`forget`), and a (seq, subscriber) keeps at most
its first attempt and its last KEEP_LAST (`cap`), however often it is retried or replayed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from hookbus.bus.store.base import DELIVERED, DeliveredRun, Delivery

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    seq        INTEGER NOT NULL,
    subscriber TEXT NOT NULL,
    attempt    INTEGER NOT NULL,   -- 1, 2, …; 0 for an event not sent (silenced)
    at         REAL NOT NULL,
    outcome    TEXT NOT NULL,      -- delivered | failed | dead | silenced
    status     INTEGER,            -- what the receiver answered (HTTP status, exit status), if known
    reason     TEXT NOT NULL DEFAULT '',
    node       TEXT NOT NULL DEFAULT '',  -- the node that delivered (several on PostgreSQL)
    -- a TRAIL resent (its answer lost) stores nothing twice: the runner stamped each record once
    PRIMARY KEY (seq, subscriber, at, attempt)
) WITHOUT ROWID;
-- the bulk, compactly: every seq from first_seq to last_seq was delivered to subscriber
-- at its first attempt, the receiver answering status; `at` is the last of them
CREATE TABLE IF NOT EXISTS delivered_runs (
    subscriber TEXT NOT NULL,
    first_seq  INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    at         REAL NOT NULL,
    status     INTEGER,
    node       TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (last_seq, subscriber, first_seq, at)
) WITHOUT ROWID;
"""

KEEP_LAST = 10  # attempts kept per (seq, subscriber) besides the first
CHUNK = 500  # seqs per statement: well under SQLite's variable limit

_COLUMNS = "seq, subscriber, attempt, at, outcome, status, reason, node"


def migrate(conn: sqlite3.Connection) -> None:
    """A journal from before the trail named its nodes: add the column (empty in old rows)."""
    for table in ("deliveries", "delivered_runs"):
        if "node" not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN node TEXT NOT NULL DEFAULT ''")


def add(conn: sqlite3.Connection, records: list[Delivery], runs: list[DeliveredRun] | None = None) -> None:
    """Store records and runs; then cap each (seq, subscriber) that may have grown past its bound."""
    if runs:
        conn.executemany("INSERT OR IGNORE INTO delivered_runs(subscriber, first_seq, last_seq, at, status, node) "
                         "VALUES (?,?,?,?,?,?)", [(r.subscriber, r.first_seq, r.last_seq, r.at, r.status, r.node) for r in runs])
    conn.executemany(f"INSERT OR IGNORE INTO deliveries({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                     [(r.seq, r.subscriber, r.attempt, r.at, r.outcome, r.status, r.reason, r.node) for r in records])
    # Only a later attempt (or a replay) can be the (KEEP_LAST + 2)th row of its pair: a first
    # delivery, the bulk, costs nothing more. (A replay from a seq delivers attempt 1 again: a pair
    # replayed that way more than KEEP_LAST times keeps its rows until one of them fails on.)
    for seq, subscriber in {(r.seq, r.subscriber) for r in records if r.attempt > KEEP_LAST}:
        cap(conn, seq, subscriber)


def cap(conn: sqlite3.Connection, seq: int, subscriber: str) -> None:
    """Keep the first row and the last KEEP_LAST of (seq, subscriber), by time."""
    rows = conn.execute("SELECT at, attempt FROM deliveries WHERE seq=? AND subscriber=? ORDER BY at, attempt",
                        (seq, subscriber)).fetchall()
    conn.executemany("DELETE FROM deliveries WHERE seq=? AND subscriber=? AND at=? AND attempt=?",
                     [(seq, subscriber, at, attempt) for at, attempt in rows[1:-KEEP_LAST]])


def forget(conn: sqlite3.Connection, seqs: list[int], below: int) -> None:
    """Drop the rows of pruned events: those of `seqs`, and any below seq `below` (the oldest kept)."""
    conn.execute("DELETE FROM deliveries WHERE seq < ?", (below,))
    # Above `below`, only the events pruned beside a kept one (a dead letter's) go one by one.
    conn.executemany("DELETE FROM deliveries WHERE seq=?", ((seq,) for seq in seqs if seq >= below))
    conn.execute("DELETE FROM delivered_runs WHERE last_seq < ?", (below,))
    # A run over pruned events beside one still kept (a dead letter's): gone once none of its events is left.
    if seqs:
        conn.execute("DELETE FROM delivered_runs WHERE last_seq >= ? AND first_seq <= ? AND NOT EXISTS "
                     "(SELECT 1 FROM events WHERE events.seq BETWEEN delivered_runs.first_seq AND delivered_runs.last_seq)",
                     (min(seqs), max(seqs)))


def read(conn: sqlite3.Connection, seqs: list[int], subscriber: str | None = None) -> list[Delivery]:
    """The rows of those seqs (of one subscriber, if given), by seq, subscriber, then time."""
    out: list[Delivery] = []
    wanted = sorted(set(seqs))
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start:start + CHUNK]
        sql = f"SELECT {_COLUMNS} FROM deliveries WHERE seq IN ({','.join('?' * len(chunk))})"
        args: list[object] = list(chunk)
        if subscriber is not None:
            sql += " AND subscriber=?"
            args.append(subscriber)
        out += [Delivery(*row) for row in conn.execute(sql + " ORDER BY seq, subscriber, at, attempt", args)]
        out += _from_runs(conn, chunk, subscriber)
    out.sort(key=lambda d: (d.seq, d.subscriber, d.at, d.attempt))
    return out


def _from_runs(conn: sqlite3.Connection, seqs: list[int], subscriber: str | None) -> list[Delivery]:
    """The seqs' first-attempt deliveries kept in runs (seqs sorted)."""
    if not seqs:
        return []
    sql = ("SELECT subscriber, first_seq, last_seq, at, status, node FROM delivered_runs WHERE last_seq >= ? AND first_seq <= ?"
           + (" AND subscriber=?" if subscriber is not None else ""))
    args: list[object] = [seqs[0], seqs[-1], *([subscriber] if subscriber is not None else [])]
    return runs_as_deliveries(conn.execute(sql, args), seqs)


def runs_as_deliveries(runs: Iterable[tuple[str, int, int, float, int | None, str]], seqs: list[int]) -> list[Delivery]:
    """The deliveries of the sorted `seqs` that the runs' rows (subscriber, first_seq, last_seq, at, status, node) hold."""
    wanted = set(seqs)
    out: list[Delivery] = []
    for name, first, last, at, status, node in runs:
        if last - first < len(wanted):
            hits = [seq for seq in range(first, last + 1) if seq in wanted]
        else:
            hits = [seq for seq in seqs if first <= seq <= last]
        out += [Delivery(seq, name, 1, at, DELIVERED, status, "", node) for seq in hits]
    return out


def recent(conn: sqlite3.Connection, subscriber: str | None, limit: int) -> list[Delivery]:
    """The newest rows (of one subscriber, if given), newest first (a scan: for the page's few)."""
    sql = f"SELECT {_COLUMNS} FROM deliveries" + (" WHERE subscriber=?" if subscriber else "") + " ORDER BY at DESC LIMIT ?"
    args: tuple[object, ...] = (subscriber, limit) if subscriber else (limit,)
    return [Delivery(*row) for row in conn.execute(sql, args)]
