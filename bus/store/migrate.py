"""`hookbus migrate --to postgresql://…`: copy a SQLite journal into a fresh
PostgreSQL database (DESIGN §12), keeping every seq, cursor (with its epoch),
retry, dead letter (with its id), open job, check state, silence, the delivery
trail, and the journal's identity (so a jsonl subscriber goes on where it was).

The journal is read in one snapshot; the database is written in one
transaction, so a copy that fails leaves the database as empty as it was.
A database that holds anything is refused: a copy never merges.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hookbus.bus.store import pgtables
from hookbus.bus.store.base import JournalError
from hookbus.bus.store.journal import Journal
from hookbus.bus.store.postgres import Conn, connect, create_schema, redacted

# Table → columns copied as they are (text made NUL-free). Leases are not copied: they
# name processes of the old broker, which is stopped.
COLUMNS: dict[str, tuple[str, ...]] = {
    "cursors": ("subscriber", "seq", "epoch", "updated_at"),
    "retries": ("subscriber", "seq", "attempts", "next_at", "error"),
    "dead_letters": ("id", "subscriber", "seq", "attempts", "error", "created_at", "state", "replayed_at"),
    "deliveries": ("seq", "subscriber", "attempt", "at", "outcome", "status", "reason", "node"),
    "delivered_runs": ("subscriber", "first_seq", "last_seq", "at", "status", "node"),
    "check_states": ("name", "body"),
    "job_runs": ("job", "body"),
    "silences": ("id", "check_name", "job", "type", "starts_at", "ends_at", "comment", "created_at"),
    "adapter_jobs": ("key", "job_id", "started_at", "opened_at"),
}
IDENTITY_COLUMNS = ("dead_letters", "silences")  # their next id follows the copied ones
CHECKED_EMPTY = ("events", "cursors", "retries", "dead_letters", "deliveries", "delivered_runs", "check_states",
                 "job_runs", "silences", "adapter_jobs")


class NotEmpty(JournalError):
    """The target database already holds a bus."""


def copy_journal(journal_path: Path, url: str) -> dict[str, int]:
    """Copy the journal at journal_path into the database at url; return rows copied per table."""
    if not journal_path.is_file():
        raise JournalError(f"no journal at {journal_path} to copy (bus.data_dir)")
    Journal(journal_path).close()  # brings an older journal's tables up to date first
    source = sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True, isolation_level=None)
    try:
        source.execute("BEGIN")  # one snapshot of everything
        with connect(url) as target:
            # A big journal's copy may take long, and pause between tables: it is not stuck.
            target.execute("SET statement_timeout = 0")
            target.execute("SET idle_in_transaction_session_timeout = 0")
            create_schema(target)
            with target.transaction():
                _refuse_non_empty(target, url)
                counts = {"events": _copy_events(source, target)}
                for table, columns in COLUMNS.items():
                    counts[table] = _copy(target, table, columns, source.execute(f"SELECT {', '.join(columns)} FROM {table}"))
                for table in IDENTITY_COLUMNS:
                    target.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false) "
                                   f"FROM {table}")
                meta = {key: int(value) for key, value in source.execute("SELECT key, value FROM meta") if key != "schema"}
                (top,) = source.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
                meta["last_seq"] = max(meta.get("last_seq", 0), int(top))
                for key, value in meta.items():
                    target.execute("INSERT INTO meta(key, value) VALUES (%s, %s) "
                                   "ON CONFLICT (key) DO UPDATE SET value=excluded.value", (key, value))
        return counts
    finally:
        source.close()


def _refuse_non_empty(target: Conn, url: str) -> None:
    held = {table: n for table in CHECKED_EMPTY
            if (n := _count(target, table))}
    head = target.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
    if head and head[0]:
        held["seq"] = int(head[0])
    if held:
        listed = ", ".join(f"{table} {n}" for table, n in held.items())
        raise NotEmpty(f"{redacted(url)} is not empty ({listed}); migrate copies into a fresh database only "
                       "(create one: CREATE DATABASE …)")


def _count(target: Conn, table: str) -> int:
    row = target.execute(f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} LIMIT 1000000) AS t").fetchone()
    return int(row[0]) if row else 0


def _copy_events(source: sqlite3.Connection, target: Conn) -> int:
    """Events keep their seq; source, id and type go in as UTF-8 bytes (postgres.py)."""
    rows = source.execute("SELECT seq, source, id, type, at, body FROM events ORDER BY seq")
    return _copy(target, "events", ("seq", "source", "id", "type", "at", "body"),
                 ((seq, src.encode(), id_.encode(), type_.encode(), at, bytes(body)) for seq, src, id_, type_, at, body in rows))


def _copy(target: Conn, table: str, columns: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> int:
    n = 0
    with target.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(tuple(pgtables.text(v) if isinstance(v, str) else v for v in row))
            n += 1
    return n
