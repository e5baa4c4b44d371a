"""The journal's tables for checks (bus/checks): each check's state and each
job's recent runs, saved with the seq they were evaluated up to, and the
silences. Run inside the journal's writes, on its connection; the bodies are
the checks' own JSON, which the store keeps without reading.
"""

from __future__ import annotations

import sqlite3

from hookbus.bus.events.silences import Silence
from hookbus.bus.store.base import CheckSnapshot

SCHEMA = """
CREATE TABLE IF NOT EXISTS check_states (name TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS job_runs (job TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS silences (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    check_name TEXT,
    job        TEXT,
    type       TEXT,
    starts_at  REAL NOT NULL,
    ends_at    REAL NOT NULL,
    comment    TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
"""

CURSOR = "checks_seq"


def load(conn: sqlite3.Connection) -> CheckSnapshot:
    row = conn.execute("SELECT value FROM meta WHERE key=?", (CURSOR,)).fetchone()
    states = {name: bytes(body) for name, body in conn.execute("SELECT name, body FROM check_states")}
    runs = {job: bytes(body) for job, body in conn.execute("SELECT job, body FROM job_runs")}
    return CheckSnapshot(row[0] if row else 0, states, runs)


def save(conn: sqlite3.Connection, seq: int, states: dict[str, bytes], runs: dict[str, bytes]) -> None:
    conn.executemany("INSERT OR REPLACE INTO check_states(name, body) VALUES (?,?)", states.items())
    conn.executemany("INSERT OR REPLACE INTO job_runs(job, body) VALUES (?,?)", runs.items())
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?,?)", (CURSOR, seq))


def add_silence(conn: sqlite3.Connection, silence: Silence) -> Silence:
    cur = conn.execute("INSERT INTO silences(check_name, job, type, starts_at, ends_at, comment, created_at) "
                       "VALUES (?,?,?,?,?,?,?)", (silence.check, silence.job, silence.type, silence.starts_at,
                                                  silence.ends_at, silence.comment, silence.created_at))
    assert cur.lastrowid is not None
    return Silence(cur.lastrowid, silence.check, silence.job, silence.type, silence.starts_at, silence.ends_at,
                   silence.comment, silence.created_at)


def end_silence(conn: sqlite3.Connection, silence_id: int, now: float) -> bool:
    """End a silence now; False when there is none with that id still running."""
    return conn.execute("UPDATE silences SET ends_at=? WHERE id=? AND ends_at > ?",
                        (now, silence_id, now)).rowcount > 0


def silences(conn: sqlite3.Connection, since: float) -> list[Silence]:
    rows = conn.execute("SELECT id, check_name, job, type, starts_at, ends_at, comment, created_at FROM silences "
                        "WHERE ends_at > ? ORDER BY id", (since,)).fetchall()
    return [Silence(*row) for row in rows]
