"""Registry of inbound adapters: `POST /ingest/{name}` → canonical events.

Each adapter is a module `adapters/<tool>.py` exposing `async def ingest(request) -> list[Event]`.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable

from aiohttp import web

from hookbus.bus.event import Event

Adapter = Callable[[web.Request], Awaitable[list[Event]]]

ADAPTERS: tuple[str, ...] = ()


def names() -> tuple[str, ...]:
    return ADAPTERS


def get(name: str) -> Adapter | None:
    if name not in ADAPTERS:
        return None
    module = importlib.import_module(f"hookbus.adapters.{name}")
    adapter: Adapter = module.ingest
    return adapter
