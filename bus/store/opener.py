"""Open the store `[bus] store` names: the SQLite journal in data_dir (the
default) or PostgreSQL (DESIGN §12)."""

from __future__ import annotations

from hookbus.bus.settings import BusSettings
from hookbus.bus.store.base import Store
from hookbus.bus.store.journal import Journal
from hookbus.bus.store.postgres import PostgresStore, redacted


def open_store(bus: BusSettings) -> Store:
    """Open (creating or migrating) the configured store; blocks: call it from a thread."""
    if bus.on_postgres:
        return PostgresStore(bus.store)
    return Journal(bus.data_dir / "journal.db", synchronous=bus.synchronous)


def store_location(bus: BusSettings) -> str:
    """Where the store is, for people: the file, or the URL without its password."""
    return redacted(bus.store) if bus.on_postgres else str(bus.data_dir / "journal.db")
