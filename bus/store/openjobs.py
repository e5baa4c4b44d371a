"""The journal's table of open jobs: a tool's start kept until its finish (see
adapters/common.py). Run inside the journal's writes, on its connection.

Keys are stored hashed: a ping key in one is the check's credential (DESIGN §13).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time

from hookbus.bus.store.base import FORGET_AFTER_S, OpenJob

log = logging.getLogger("hookbus.journal")

SCHEMA = """
CREATE TABLE IF NOT EXISTS adapter_jobs (
    key        TEXT PRIMARY KEY,
    job_id     TEXT NOT NULL,
    started_at TEXT NOT NULL,
    opened_at  REAL NOT NULL
);
"""

KEY_HASH = "sha256:"


def hash_key(key: str) -> str:
    """How adapter_jobs keeps a key: ping keys are credentials (DESIGN §13)."""
    return KEY_HASH + hashlib.sha256(key.encode()).hexdigest()


def hash_plain_keys(conn: sqlite3.Connection) -> None:
    """Rows written before keys were hashed keep a ping key in plain text: hash them."""
    rows = conn.execute("SELECT key FROM adapter_jobs WHERE key NOT LIKE ?", (f"{KEY_HASH}%",)).fetchall()
    if not rows:
        return
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("UPDATE OR REPLACE adapter_jobs SET key=? WHERE key=?", [(hash_key(key), key) for (key,) in rows])
    log.info("journal: %d open job key(s) stored hashed from now on", len(rows))


def keep(conn: sqlite3.Connection, key: str, job: OpenJob) -> None:
    """Keep `job` under `key`; forget the starts older than FORGET_AFTER_S."""
    now = time.time()
    conn.execute("INSERT OR REPLACE INTO adapter_jobs(key, job_id, started_at, opened_at) VALUES (?,?,?,?)",
                 (hash_key(key), job.job_id, job.started_at, now))
    conn.execute("DELETE FROM adapter_jobs WHERE opened_at < ?", (now - FORGET_AFTER_S,))


def find(conn: sqlite3.Connection, key: str) -> OpenJob | None:
    row = conn.execute("SELECT job_id, started_at FROM adapter_jobs WHERE key=?", (hash_key(key),)).fetchone()
    return OpenJob(row[0], row[1]) if row else None


def forget(conn: sqlite3.Connection, key: str, job_id: str) -> None:
    """Forget the job under `key` if it is still `job_id`."""
    conn.execute("DELETE FROM adapter_jobs WHERE key=? AND job_id=?", (hash_key(key), job_id))
