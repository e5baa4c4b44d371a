"""The journal's table of the delivery trail: per event and subscriber, each
attempt with its time, outcome, the receiver's status and a short reason. Run
inside the journal's writes, on its connection.

Runners report it in batches (the TRAIL control command); reasons come
scrubbed and cut by then. It is kept as long as its event: `prune` drops the
rows of the events it deletes (`forget`), and a (seq, subscriber) keeps at most
its first attempt and its last KEEP_LAST (`cap`), however often it is retried or replayed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from hookbus.bus.store.base import Delivery

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    seq        INTEGER NOT NULL,
    subscriber TEXT NOT NULL,
    attempt    INTEGER NOT NULL,   -- 1, 2, …; 0 for an event not sent (silenced)
    at         REAL NOT NULL,
    outcome    TEXT NOT NULL,      -- delivered | failed | dead | silenced
    status     INTEGER,            -- what the receiver answered (HTTP status, exit status), if known
    reason     TEXT NOT NULL DEFAULT '',
    -- a TRAIL resent (its answer lost) stores nothing twice: the runner stamped each record once
    PRIMARY KEY (seq, subscriber, at, attempt)
) WITHOUT ROWID;
"""

KEEP_LAST = 10  # attempts kept per (seq, subscriber) besides the first
CHUNK = 500  # seqs per statement: well under SQLite's variable limit

_COLUMNS = "seq, subscriber, attempt, at, outcome, status, reason"


def add(conn: sqlite3.Connection, records: list[Delivery]) -> None:
    """Store records; then cap each (seq, subscriber) that may have grown past its bound."""
    conn.executemany(f"INSERT OR IGNORE INTO deliveries({_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
                     [(r.seq, r.subscriber, r.attempt, r.at, r.outcome, r.status, r.reason) for r in records])
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


def forget(conn: sqlite3.Connection, seqs: Iterable[int], below: int) -> None:
    """Drop the rows of pruned events: those of `seqs`, and any below seq `below` (the oldest kept)."""
    conn.executemany("DELETE FROM deliveries WHERE seq=?", ((seq,) for seq in seqs))
    conn.execute("DELETE FROM deliveries WHERE seq < ?", (below,))


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
    return out


def recent(conn: sqlite3.Connection, subscriber: str | None, limit: int) -> list[Delivery]:
    """The newest rows (of one subscriber, if given), newest first (a scan: for the page's few)."""
    sql = f"SELECT {_COLUMNS} FROM deliveries" + (" WHERE subscriber=?" if subscriber else "") + " ORDER BY at DESC LIMIT ?"
    args: tuple[object, ...] = (subscriber, limit) if subscriber else (limit,)
    return [Delivery(*row) for row in conn.execute(sql, args)]
