"""Registry of inbound adapters: `POST /ingest/{name}` → canonical events.

Each adapter is a module `adapters/<tool>.py` exposing `async def ingest(request) -> list[Event]`;
it raises EventError (or BadRequest) naming the field of a bad payload, answered with 400.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable

from aiohttp import web

from hookbus.bus.events.event import Event

Adapter = Callable[[web.Request], Awaitable[list[Event]]]

# One module per tool; each maps its native payload to canonical events (README: "Speaking each tool's language").
ADAPTERS: tuple[str, ...] = ("borgitory", "backrest", "borgmatic", "restic", "netcfgbu")


def names() -> tuple[str, ...]:
    return ADAPTERS


def get(name: str) -> Adapter | None:
    if name not in ADAPTERS:
        return None
    module = importlib.import_module(f"hookbus.adapters.{name}")
    adapter: Adapter = module.ingest
    return adapter
