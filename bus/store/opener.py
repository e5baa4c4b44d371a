"""Open the store `[bus] store` names: the SQLite journal in data_dir (the
default) or PostgreSQL (DESIGN §12).

The PostgreSQL module (and its driver, ~100 ms to import) is loaded only for a
PostgreSQL store: `hookbus run` and `serve` on SQLite start without it."""

from __future__ import annotations

from hookbus.bus.settings import BusSettings
from hookbus.bus.store.base import Store
from hookbus.bus.store.journal import Journal


def open_store(bus: BusSettings) -> Store:
    """Open (creating or migrating) the configured store; blocks: call it from a thread."""
    if bus.on_postgres:
        from hookbus.bus.store.postgres import PostgresStore

        return PostgresStore(bus.store)
    return Journal(bus.data_dir / "journal.db", synchronous=bus.synchronous)


def store_location(bus: BusSettings) -> str:
    """Where the store is, for people: the file, or the URL without its password."""
    if bus.on_postgres:
        from hookbus.bus.store.postgres import redacted

        return redacted(bus.store)
    return str(bus.data_dir / "journal.db")
