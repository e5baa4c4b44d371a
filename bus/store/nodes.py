"""The journal's tables of nodes and claims (DESIGN §12): which `hookbus serve`
processes share the store, and which of them runs each subscriber and each
piece of singleton work. Run inside the journal's writes, on its connection.

A claim is a named lease: held by one holder until `expires_at`, by the store's
clock, so the nodes' own clocks never have to agree. On SQLite there is one
node (one broker per data directory); the tables are the same, so `status`
reads alike on both stores.
"""

from __future__ import annotations

import sqlite3
import time

from hookbus.bus.store.base import Claim, NodeBeat

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    node       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,     -- the process: host, pid and a random tag
    started_at REAL NOT NULL,
    beat_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    name       TEXT PRIMARY KEY,  -- "subscriber:audit", "checks", "retention"
    holder     TEXT NOT NULL,
    node       TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""


def claim(conn: sqlite3.Connection, name: str, holder: str, node: str, ttl: float) -> bool:
    """Take or renew `name` for holder until now + ttl, when it is free, expired or the holder's own."""
    now = time.time()
    row = conn.execute("SELECT holder, expires_at FROM claims WHERE name=?", (name,)).fetchone()
    if row and row[0] != holder and row[1] > now:
        return False
    conn.execute("INSERT OR REPLACE INTO claims(name, holder, node, expires_at) VALUES (?,?,?,?)",
                 (name, holder, node, now + ttl))
    return True


def release(conn: sqlite3.Connection, name: str, holder: str) -> None:
    conn.execute("DELETE FROM claims WHERE name=? AND holder=?", (name, holder))


def beat(conn: sqlite3.Connection, node: str, holder: str, started_at: float) -> None:
    conn.execute("INSERT OR REPLACE INTO nodes(node, holder, started_at, beat_at) VALUES (?,?,?,?)",
                 (node, holder, started_at, time.time()))


def nodes(conn: sqlite3.Connection) -> list[NodeBeat]:
    now = time.time()
    return [NodeBeat(node, holder, started_at, now - beat_at)
            for node, holder, started_at, beat_at in conn.execute(
                "SELECT node, holder, started_at, beat_at FROM nodes ORDER BY node")]


def claims(conn: sqlite3.Connection) -> list[Claim]:
    now = time.time()
    return [Claim(name, holder, node, expires_at - now)
            for name, holder, node, expires_at in conn.execute(
                "SELECT name, holder, node, expires_at FROM claims ORDER BY name")]
