"""The nodes and claims tables on PostgreSQL (nodes.py is the SQLite side): times
are the database's own clock (`clock_timestamp()`), so the nodes' clocks never
have to agree for a claim to expire when it should. Run inside the store's writes.
"""

from __future__ import annotations

from hookbus.bus.store.base import Claim, NodeBeat
from hookbus.bus.store.pgtables import Conn, text

NOW = "extract(epoch from clock_timestamp())"

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    node       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    beat_at    DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    node       TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
"""

# Two nodes asking at once: the second waits for the first's row, then sees it held.
_CLAIM = (f"INSERT INTO claims(name, holder, node, expires_at) VALUES (%s, %s, %s, {NOW} + %s) "
          "ON CONFLICT (name) DO UPDATE SET holder=excluded.holder, node=excluded.node, expires_at=excluded.expires_at "
          f"WHERE claims.holder = excluded.holder OR claims.expires_at < {NOW} RETURNING 1")


def claim(conn: Conn, name: str, holder: str, node: str, ttl: float) -> bool:
    return conn.execute(_CLAIM, (text(name), text(holder), text(node), ttl)).fetchone() is not None


def release(conn: Conn, name: str, holder: str) -> None:
    conn.execute("DELETE FROM claims WHERE name=%s AND holder=%s", (text(name), text(holder)))


def beat(conn: Conn, node: str, holder: str, started_at: float) -> None:
    conn.execute(f"INSERT INTO nodes(node, holder, started_at, beat_at) VALUES (%s, %s, %s, {NOW}) "
                 "ON CONFLICT (node) DO UPDATE SET holder=excluded.holder, started_at=excluded.started_at, "
                 "beat_at=excluded.beat_at", (text(node), text(holder), started_at))


def nodes(conn: Conn) -> list[NodeBeat]:
    rows = conn.execute(f"SELECT node, holder, started_at, {NOW} - beat_at FROM nodes ORDER BY node").fetchall()
    return [NodeBeat(node, holder, started_at, age) for node, holder, started_at, age in rows]


def claims(conn: Conn) -> list[Claim]:
    rows = conn.execute(f"SELECT name, holder, node, expires_at - {NOW} FROM claims ORDER BY name").fetchall()
    return [Claim(name, holder, node, left) for name, holder, node, left in rows]
